-- wrk script: single job submissions (POST /api/v1/jobs)
wrk.method = "POST"
wrk.body = '{"command": ["true"], "cpus": "1"}'
wrk.headers["Content-Type"] = "application/json"
