"""The web dashboard (issue 22): server-rendered pages under /ui, served by `kran serve`,
using the same services, and so the same rules, as the API."""
