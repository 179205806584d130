"""Admin users, their sign-in sessions, the audit log and sign-in throttling, in SQL."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from callwright.admin.models import ROLES, AdminSession, AdminUser, AuditEntry
from callwright.memory.db import sessionmaker
from callwright.memory.models import utcnow

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the username is unknown, so both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True, kw_only=True)
class Identity:
    """The signed-in user, as a request sees it."""

    user_id: int
    username: str
    role: str
    csrf_token: str

    @property
    def is_admin(self) -> bool:
        """Whether the user has the admin role."""
        return self.role == "admin"


@dataclass(frozen=True, kw_only=True)
class SignInLimits:
    """Failed sign-ins allowed per window, per IP address and per username."""

    window: timedelta = timedelta(minutes=15)
    per_ip: int = 20
    per_user: int = 5


class AccountStore:
    """Admin-site users, their sign-in sessions, sign-in throttling and the audit log, in SQL.

    Sessions last `session_ttl`; `limits` sets the failed sign-ins `throttled` allows.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        session_ttl: timedelta = timedelta(hours=12),
        limits: SignInLimits | None = None,
    ):
        self._sessions = sessionmaker(engine)
        self.session_ttl = session_ttl
        self.limits = limits or SignInLimits()

    # Users

    async def add_user(self, username: str, password: str, *, role: str) -> int:
        """Create an active user, with the password hashed (argon2id); their id.

        Raises:
            ValueError: A role not in `ROLES`, a username not 1 to 64 characters long, a
                password shorter than 10 characters, or a username already taken.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not username or len(username) > 64:
            raise ValueError("a username is 1 to 64 characters")
        if len(password) < 10:
            raise ValueError("a password is at least 10 characters")
        async with self._sessions.begin() as session:
            if await session.scalar(select(AdminUser.id).where(AdminUser.username == username)):
                raise ValueError(f"user {username!r} already exists")
            user = AdminUser(username=username, password_hash=_hasher.hash(password), role=role,
                             active=True)
            session.add(user)
            await session.flush()
            return user.id

    async def list_users(self) -> list[AdminUser]:
        """Every user, disabled ones too, by username."""
        async with self._sessions() as session:
            return list(await session.scalars(select(AdminUser).order_by(AdminUser.username)))

    async def set_active(self, user_id: int, active: bool) -> AdminUser | None:
        """Enable or disable a user; disabling also signs them out everywhere."""
        async with self._sessions.begin() as session:
            user = await session.get(AdminUser, user_id)
            if user is None:
                return None
            user.active = active
            if not active:
                await session.execute(delete(AdminSession).where(AdminSession.user_id == user_id))
            return user

    async def set_password(self, username: str, password: str) -> bool:
        """Set a user's password and end their sessions; False when there is no such user.

        Raises:
            ValueError: A password shorter than 10 characters.
        """
        if len(password) < 10:
            raise ValueError("a password is at least 10 characters")
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(AdminUser).where(AdminUser.username == username)
                .values(password_hash=_hasher.hash(password))
            )
            if result.rowcount:
                await session.execute(
                    delete(AdminSession).where(
                        AdminSession.user_id == select(AdminUser.id)
                        .where(AdminUser.username == username).scalar_subquery()
                    )
                )
            return bool(result.rowcount)

    # Sign-in

    async def throttled(self, *, ip: str, username: str) -> bool:
        """Too many recent failed sign-ins from this address or for this username."""
        since = utcnow() - self.limits.window
        failed = AuditEntry.action == "sign-in failed"
        async with self._sessions() as session:
            by_ip = await session.scalar(
                select(func.count()).where(failed, AuditEntry.at >= since, AuditEntry.ip == ip)
            )
            by_user = await session.scalar(
                select(func.count()).where(
                    failed, AuditEntry.at >= since, AuditEntry.username == username
                )
            )
        return by_ip >= self.limits.per_ip or by_user >= self.limits.per_user

    async def authenticate(self, username: str, password: str) -> AdminUser | None:
        """The active user with this username and password, or None.

        An unknown username takes as long to refuse as a wrong password. On success the
        sign-in time is stored, and the hash redone if its parameters are outdated. Throttling
        and the audit log are the caller's: see `throttled` and `audit`.
        """
        async with self._sessions.begin() as session:
            user = await session.scalar(select(AdminUser).where(AdminUser.username == username))
            try:
                _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
            except (VerificationError, InvalidHashError):
                return None
            if user is None or not user.active:
                return None
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = _hasher.hash(password)
            user.last_login_at = utcnow()
            return user

    async def open_session(self, user: AdminUser, *, ip: str) -> str:
        """A new session for `user`; returns the cookie value (only its hash is stored)."""
        token = secrets.token_urlsafe(32)
        async with self._sessions.begin() as session:
            await session.execute(delete(AdminSession).where(AdminSession.expires_at < utcnow()))
            session.add(AdminSession(
                token_sha256=_sha256(token), user_id=user.id, csrf_token=secrets.token_urlsafe(32),
                expires_at=utcnow() + self.session_ttl, ip=ip,
            ))
        return token

    async def identify(self, token: str) -> Identity | None:
        """Who holds this session cookie; None when it is unknown, expired, or its user disabled."""
        async with self._sessions() as session:
            row = (await session.execute(
                select(AdminSession, AdminUser)
                .join(AdminUser, AdminUser.id == AdminSession.user_id)
                .where(AdminSession.token_sha256 == _sha256(token), AdminUser.active.is_(True))
            )).first()
        if row is None or _aware(row.AdminSession.expires_at) < utcnow():
            return None
        return Identity(user_id=row.AdminUser.id, username=row.AdminUser.username,
                        role=row.AdminUser.role, csrf_token=row.AdminSession.csrf_token)

    async def close_session(self, token: str) -> None:
        """End the session with this cookie value (sign out); an unknown one is ignored."""
        async with self._sessions.begin() as session:
            await session.execute(
                delete(AdminSession).where(AdminSession.token_sha256 == _sha256(token))
            )

    # Audit log

    async def audit(
        self, *, username: str, action: str, target: str = "", ip: str | None = None,
        user_id: int | None = None, detail: dict | None = None,
    ) -> None:
        """Add an entry to the audit log; `target` is cut to 128 characters."""
        async with self._sessions.begin() as session:
            session.add(AuditEntry(user_id=user_id, username=username, ip=ip, action=action,
                                   target=target[:128], detail=detail))

    async def audit_log(
        self, *, limit: int = 100, offset: int = 0, query: str = ""
    ) -> list[AuditEntry]:
        """Audit entries, newest first, a page at a time.

        With `query`, only those whose username, action or target contains it, ignoring case.
        """
        statement = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        if query:
            statement = statement.where(or_(
                *(column.icontains(query, autoescape=True)
                  for column in (AuditEntry.username, AuditEntry.action, AuditEntry.target))))
        async with self._sessions() as session:
            return list(await session.scalars(statement.limit(limit).offset(offset)))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
