"""`distribute user ...`: the server-side account commands, which open the database themselves
(`--database` or DISTRIBUTE_DATABASE) rather than ask a running server.
"""

from __future__ import annotations

import argparse
import sys

import trio

from .errors import DistributeError
from .settings import load_settings

__all__ = ["create_user", "grant_admin"]


def create_user(args: argparse.Namespace) -> int:
    """`distribute user create EMAIL [--admin] [--password-stdin]`: prints the new account's API token."""
    from .plugins import open_storage

    settings = load_settings(args.settings, overrides={"database": args.database})
    password_hash = None
    if args.password_stdin:
        from argon2 import PasswordHasher

        password = sys.stdin.readline().rstrip("\n")
        if len(password) < 10:
            raise DistributeError("the password must have at least 10 characters (as in the console)")
        password_hash = PasswordHasher().hash(password)

    async def run() -> str:
        storage = await open_storage(settings.database, 1)
        try:
            # The operator vouches for this address: it needs no verification mail.
            user = await storage.create_user(args.email, password_hash, verified=True, admin=args.admin)
            return await storage.create_token(user.id, "cli")
        finally:
            await storage.aclose()

    token = trio.run(run)
    print(f"created {'admin' if args.admin else 'user'} {args.email}; API token: {token}")
    return 0


def grant_admin(args: argparse.Namespace) -> int:
    """`distribute user grant-admin EMAIL`: the account becomes an admin."""
    from .plugins import open_storage

    settings = load_settings(args.settings, overrides={"database": args.database})

    async def run() -> None:
        storage = await open_storage(settings.database, 1)
        try:
            user = await storage.user_by_email(args.email)
            if user is None:
                raise DistributeError(f"no user with e-mail {args.email}")
            await storage.set_admin(user.id, True)
        finally:
            await storage.aclose()

    trio.run(run)
    print(f"{args.email} is an admin")
    return 0
