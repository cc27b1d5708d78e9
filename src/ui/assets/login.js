// The login form: the token goes once to /ui/login, which sets the session cookie.
"use strict";
document.getElementById("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = document.getElementById("error");
  error.textContent = "";
  const token = document.getElementById("token").value;
  try {
    const res = await fetch("/ui/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token }),
    });
    if (res.ok) {
      location.replace("/ui/");
      return;
    }
    const body = await res.json().catch(() => ({}));
    error.textContent = res.status === 401 ? "Wrong token." : body.message || `Refused (${res.status}).`;
  } catch (err) {
    error.textContent = `The relay did not answer: ${err}`;
  }
});
