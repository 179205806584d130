"""Who is asking: session cookies, CSRF tokens on every form, roles, and the audit trail."""

from __future__ import annotations

import hmac
import secrets

from fastapi import HTTPException, Request, Response

from callwright.admin.accounts import AccountStore, Identity

SESSION_COOKIE = "cw_admin"
SIGN_IN_CSRF_COOKIE = "cw_admin_signin"  # double-submit token for the sign-in form
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class SignInRequired(Exception):
    """Raised by page handlers without a valid session; answered with a redirect."""


class SiteAuth:
    """Who is asking, for the admin site: session cookies, CSRF checks, roles, auditing.

    Its cookies are HttpOnly, scoped to `cookie_path`, and Secure with `secure_cookies`.
    """

    def __init__(self, *, accounts: AccountStore, secure_cookies: bool, cookie_path: str):
        self.accounts = accounts
        self.secure_cookies = secure_cookies
        self.cookie_path = cookie_path

    def set_cookie(self, response: Response, name: str, value: str, *, max_age: int) -> None:
        """Set a cookie: SameSite=Strict for the sign-in form's CSRF cookie, Lax for others."""
        response.set_cookie(
            name, value, max_age=max_age, path=self.cookie_path, httponly=True,
            samesite="strict" if name == SIGN_IN_CSRF_COOKIE else "lax",
            secure=self.secure_cookies,
        )

    def clear_cookie(self, response: Response, name: str) -> None:
        """Tell the browser to delete the cookie `name`."""
        response.delete_cookie(name, path=self.cookie_path, httponly=True,
                               secure=self.secure_cookies, samesite="lax")

    async def identity(self, request: Request) -> Identity | None:
        """The identity behind the request's session cookie, or None."""
        token = request.cookies.get(SESSION_COOKIE)
        return await self.accounts.identify(token) if token else None

    # Dependencies

    async def user(self, request: Request) -> Identity:
        """Dependency: the signed-in user, looked up once per request.

        Raises:
            SignInRequired: The request has no valid session.
        """
        if (identity := getattr(request.state, "identity", None)) is None:
            identity = await self.identity(request)
            if identity is None:
                raise SignInRequired()
            request.state.identity = identity
        return identity

    async def admin(self, request: Request) -> Identity:
        """Dependency: the signed-in user, who must be an admin.

        Raises:
            SignInRequired: The request has no valid session.
            HTTPException: 403 for any other role; the refusal is audited.
        """
        identity = await self.user(request)
        if not identity.is_admin:
            await self.audit(request, identity, "denied", request.url.path)
            raise HTTPException(status_code=403, detail="This page is for administrators.")
        return identity

    async def csrf(self, request: Request) -> None:
        """Every state-changing request carries the session's (or sign-in form's) token."""
        if request.method in SAFE_METHODS:
            return
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            sent = (await request.form()).get(CSRF_FIELD)
        if request.url.path.endswith("/login"):
            expected = request.cookies.get(SIGN_IN_CSRF_COOKIE)
        else:
            identity = await self.identity(request)
            expected = identity.csrf_token if identity else None
            request.state.identity = identity
        if not (isinstance(sent, str) and expected and hmac.compare_digest(sent, expected)):
            raise HTTPException(status_code=403, detail="Missing or wrong CSRF token: reload "
                                "the page and try again.")

    async def audit(self, request: Request, identity: Identity | None, action: str,
                    target: str = "", detail: dict | None = None) -> None:
        """Add an entry to the audit log with the client's IP; "-" is the username if signed out."""
        await self.accounts.audit(
            username=identity.username if identity else "-",
            user_id=identity.user_id if identity else None,
            ip=client_ip(request), action=action, target=target, detail=detail,
        )


def client_ip(request: Request) -> str:
    """The client's IP address as the ASGI server reports it, or "unknown"."""
    return request.client.host if request.client else "unknown"


def new_token() -> str:
    """A new random, URL-safe token (32 random bytes), e.g. for the sign-in CSRF cookie."""
    return secrets.token_urlsafe(32)
