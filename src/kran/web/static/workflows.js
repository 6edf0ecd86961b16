// a workflow run's page: cancelling asks first (the form works without this too)
"use strict";
(function () {
  const cancel = document.getElementById("cancel-run");
  if (cancel) cancel.form.addEventListener("submit", (e) => {
    if (!window.confirm("Cancel this workflow run? Its running steps are killed.")) e.preventDefault();
  });
})();
