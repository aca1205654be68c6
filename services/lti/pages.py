"""The few HTML pages the tool answers with: a refusal, a note, and the configuration an LMS
administrator copies. Every value is escaped; none carries a token."""

from __future__ import annotations

from html import escape

from domain.lti import LaunchRefused
from services.lti.settings import LtiOptions

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem;"
    "color:#1d2330}h1{font-size:1.4rem}code{background:#eef1f5;padding:.1rem .3rem;"
    "border-radius:3px;word-break:break-all}.code{color:#8a1f11;font-family:monospace}"
    "table{border-collapse:collapse}td,th{border-bottom:1px solid #dde2ea;padding:.4rem;"
    "text-align:left;vertical-align:top}"
)

_WHAT_TO_DO = {
    "state_invalid": "Go back to your course and open the link again.",
    "nonce_replayed": "Go back to your course and open the link again.",
    "launch_expired": "Go back to your course and open the link again.",
    "role_not_allowed": "Open the exam link of your course instead, or ask your instructor.",
    "platform_unavailable": "Try again in a minute; if it persists, tell your LMS administrator.",
}


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f'</title><meta name="viewport" content="width=device-width"><style>{_STYLE}</style>'
        f"</head><body>{body}</body></html>"
    )


def refusal_page(refusal: LaunchRefused) -> str:
    sentence = refusal.message[:1].upper() + refusal.message[1:]
    todo = _WHAT_TO_DO.get(
        refusal.code, "Tell your LMS administrator; the code below says what to check."
    )
    return _page(
        "Launch refused",
        f"<h1>This exam tool could not open</h1><p>{escape(sentence)}.</p>"
        f"<p>{escape(todo)}</p><p>Error code: <span class=code id=code>"
        f"{escape(refusal.code)}</span></p>",
    )


def note_page(title: str, text: str) -> str:
    return _page(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>")


def config_page(options: LtiOptions) -> str:
    base = options.public_url.rstrip("/")
    rows = [
        ("LTI version", "LTI 1.3"),
        ("Tool URL / target link URI (exam links)", f"{base}/lti/exam"),
        ("Target link URI (the course's proctor dashboard link)", f"{base}/lti/dashboard"),
        ("Initiate login URL (OIDC login initiation)", f"{base}/lti/login"),
        ("Redirection URI(s)", f"{base}/lti/launch"),
        ("Public key type", "Keyset URL"),
        ("Public keyset URL (JWKS)", f"{base}/lti/jwks.json"),
        ("Services", "IMS LTI Names and Role Provisioning: use this service to retrieve"),
        ("Privacy: share launcher's name", "Always"),
        ("Custom parameter (optional, per exam link)", "exam_minutes=90"),
        ("Canvas developer key (Paste JSON / Enter URL)", f"{base}/lti/canvas.json"),
    ]
    table = "".join(
        f"<tr><th>{escape(k)}</th><td><code>{escape(v)}</code></td></tr>" for k, v in rows
    )
    platforms = (
        "".join(
            f"<tr><td><code>{escape(p.issuer)}</code></td><td><code>{escape(p.client_id)}</code></td>"
            f"<td>{escape(', '.join(p.deployment_ids))}</td></tr>"
            for p in options.platforms
        )
        or "<tr><td colspan=3>none yet: set PROCTOR_LTI__PLATFORMS</td></tr>"
    )
    return _page(
        "Proctoring tool: LTI 1.3 configuration",
        "<h1>Register this proctoring tool in your LMS</h1>"
        "<p>Paste these values into the LMS's external tool (LTI 1.3) registration; then give"
        " the tool the platform's values (issuer, client id, deployment id, authentication"
        " endpoint, token endpoint, keyset URL) in <code>PROCTOR_LTI__PLATFORMS</code>."
        " Step by step for Moodle and Canvas: docs/lms.md.</p>"
        f"<table>{table}</table><h2>Platforms this tool accepts</h2><table><tr><th>Issuer</th>"
        f"<th>Client id</th><th>Deployments</th></tr>{platforms}</table>",
    )


def canvas_config(options: LtiOptions) -> dict[str, object]:
    """Canvas's developer-key JSON (``Paste JSON`` / ``Enter URL``): the same values as above."""
    base = options.public_url.rstrip("/")
    host = base.split("://", 1)[-1].split("/", 1)[0]
    return {
        "title": "Live exam proctoring",
        "description": "Students' exam pages and the proctor dashboard, live.",
        "oidc_initiation_url": f"{base}/lti/login",
        "target_link_uri": f"{base}/lti/exam",
        "public_jwk_url": f"{base}/lti/jwks.json",
        "scopes": ["https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"],
        "extensions": [
            {
                "domain": host,
                "platform": "canvas.instructure.com",
                "privacy_level": "name_only",
                "settings": {
                    "placements": [
                        {
                            "placement": "assignment_selection",
                            "message_type": "LtiResourceLinkRequest",
                            "target_link_uri": f"{base}/lti/exam",
                        },
                        {
                            "placement": "course_navigation",
                            "message_type": "LtiResourceLinkRequest",
                            "target_link_uri": f"{base}/lti/dashboard",
                            "visibility": "admins",
                            "text": "Proctor dashboard",
                        },
                    ]
                },
            }
        ],
    }
