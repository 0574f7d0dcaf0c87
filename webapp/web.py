"""The escalation queue page: plain HTML, CSS and JavaScript served by Flask, no token needed.

The page logs in through the API itself and keeps its token in sessionStorage, so these
routes only hand out static markup; every piece of data comes from /api/v1 with a Bearer
header and is rendered as text."""
import os

from flask import Blueprint, Response, current_app, redirect, render_template, url_for

bp = Blueprint("web", __name__)

# Only this origin's own files: no CDN, no external fonts, no inline script or style.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "font-src 'self'", "object-src 'none'", "base-uri 'none'",
    "form-action 'self'", "frame-ancestors 'none'",
))


def asset_url(filename: str) -> str:
    """A static file's URL carrying its modification time, so a deploy is never half cached."""
    path = os.path.join(current_app.static_folder, filename)
    return url_for("static", filename=filename, v=int(os.path.getmtime(path)))


@bp.get("/")
def index():
    return redirect(url_for("web.queue"))


@bp.get("/queue")
def queue():
    return render_template("queue.html", asset_url=asset_url)


@bp.after_request
def page_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response
