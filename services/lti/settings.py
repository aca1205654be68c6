"""LTI tool settings (``PROCTOR_LTI__*``), e.g. ``PROCTOR_LTI__PUBLIC_URL``; the platforms
are one JSON list: ``PROCTOR_LTI__PLATFORMS='[{"issuer": ..., "client_id": ...}]'``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from adapters.settings import CommonSettings
from domain.lti import Registration


class PlatformSettings(BaseModel):
    """One LMS installation, with the values its administrator got when registering the tool."""

    issuer: str = Field(description="the platform's issuer (iss), e.g. https://moodle.example.edu")
    client_id: str = Field(description="the client id the platform gave this tool")
    auth_login_url: str = Field(description="the platform's OIDC authentication endpoint")
    auth_token_url: str = Field(description="the platform's OAuth2 token endpoint (for NRPS)")
    key_set_url: str = Field(description="the platform's public keys (JWKS URL)")
    deployment_ids: list[str] = Field(min_length=1, description="deployments to accept")

    def registration(self) -> Registration:
        return Registration(
            issuer=self.issuer,
            client_id=self.client_id,
            auth_login_url=self.auth_login_url,
            auth_token_url=self.auth_token_url,
            key_set_url=self.key_set_url,
            deployment_ids=tuple(self.deployment_ids),
        )


class LtiOptions(BaseModel):
    host: str = Field(default="127.0.0.1", description="listen address")
    port: int = Field(default=8090, ge=0, le=65535, description="listen port")
    public_url: str = Field(
        default="http://127.0.0.1:8090",
        description=(
            "this tool's URL as browsers and platforms reach it (behind the ingress in"
            " production); its /lti/login, /lti/launch and /lti/jwks.json go to the LMS"
        ),
    )
    app_url: str = Field(
        default="http://127.0.0.1:8080",
        description="where the gateways serve the exam page (/exam) and the dashboard (/)",
    )
    platforms: list[PlatformSettings] = Field(
        default_factory=list, description="the platforms (LMS installations) that may launch"
    )
    private_key_file: str | None = Field(
        default=None,
        description=(
            "PEM RSA private key that signs this tool's service requests (NRPS); its public half"
            " is served at /lti/jwks.json. Unset: a new key per start (development only)"
        ),
    )
    previous_public_key_files: list[str] = Field(
        default_factory=list,
        description="PEM public keys still published during a key rotation",
    )
    token_secret: str = Field(
        default="dev-only-secret-change-me-0123456789abcdef",
        description="the gateways' HS256 key (PROCTOR_GATEWAY__TOKEN_SECRET): signs the launch's",
    )
    token_issuer: str = Field(default="lms", description="the gateways' expected `iss` claim")
    token_ttl_s: int = Field(
        default=6 * 3600, gt=0, description="lifetime of the tokens a launch hands over"
    )
    login_ttl_s: int = Field(
        default=300, gt=0, description="how long a login's state and nonce wait for the launch"
    )
    clock_leeway_s: int = Field(
        default=60, ge=0, description="tolerated clock skew on the platform's exp and iat"
    )
    http_timeout_s: float = Field(
        default=5.0, gt=0, description="bound on each call to a platform (keys, token, NRPS)"
    )
    roster_cache_s: float = Field(
        default=60.0, ge=0, description="how long a course roster from NRPS is reused"
    )
    secure_cookies: bool | None = Field(
        default=None,
        description=(
            "mark the login cookie Secure (required for SameSite=None); null: when public_url is"
            " https or loopback"
        ),
    )


class LtiSettings(CommonSettings):
    lti: LtiOptions = LtiOptions()
