"""Account pages: sign up, sign in, sign out, the display name, change and reset the password, API tokens, deletion.

Every state change is a POST carrying a CSRF token (checked in `web.load_visitor`). Sessions end on
sign-out (this one), on a password change or reset (all of the user's), and with the account.
Sign-in and reset requests are rate-limited per client address and per e-mail address; a sign-in
attempt counts before its password is checked (so a flood is refused without paying for hashes), and
a successful one is taken back. Sign-up has a honeypot field, a signed form stamp and a per-address
limit. Sign-up and reset requests answer the same, and do the same hashing, whether or not the e-mail
address has an account; the mail (if any) goes out in the background. A password reset revokes every
API token of the account; a password change may too. When `email_verification` is on, a sign-up is
mailed a verification link (expiring, its token hashed at rest); until it is followed the account
creates no campaigns, and every page shows a banner that can send the link again.
"""

from __future__ import annotations

import logging
import secrets
import unicodedata
from datetime import timedelta

from quart import Response, current_app, g, redirect, request, url_for
from quart.typing import ResponseTypes

from .. import auth
from ..mail import MailError, send_mail
from ..models import DISPLAY_NAME_MAX_CHARS
from ..webstate import current_platform
from .web import (
    ConsoleBlueprint,
    clear_session_cookie,
    client_address,
    console,
    login_required,
    own_url,
    page,
    safe_next,
    session_token,
    set_session_cookie,
)

__all__ = ["blueprint"]

log = logging.getLogger(__name__)

blueprint = ConsoleBlueprint("accounts", __name__)

NOTICES = {
    "reset": "Your password has been changed. Sign in with the new one.",
    "password": "Your password has been changed. Your other sessions were signed out.",
    "password-tokens": "Your password has been changed. Your other sessions were signed out and every API "
    "token was revoked.",
    "revoked": "The token has been revoked.",
    "deleted": "Your account and everything in it have been deleted.",
    "signedout": "You are signed out.",
    "verify-sent": "A new verification link is on its way to your e-mail address.",
    "name": "Your display name is saved: the cards of your campaigns show it.",
    "name-cleared": "Your display name is removed: the cards of your campaigns name nobody.",
}


def normal_email(raw: str) -> str:
    return raw.strip().lower()


def plausible_email(email: str) -> bool:
    local, at, domain = email.partition("@")
    return bool(local and at and "." in domain and len(email) <= 254 and " " not in email)


def display_name_problem(name: str) -> str | None:
    """Why `name` (already trimmed) cannot name an account on the embed card, or None if it can."""
    if len(name) > DISPLAY_NAME_MAX_CHARS:
        return f"A display name has at most {DISPLAY_NAME_MAX_CHARS} characters ({len(name)} given)."
    # Control characters (line breaks, bidirectional overrides among the format ones) could make the
    # card say something other than what the owner sees here.
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return "A display name cannot contain line breaks, tabs or other control characters."
    return None


async def start_session(user_id: int, target: str) -> ResponseTypes:
    settings = current_platform().settings
    token, _ = await console().accounts.create_session(
        user_id, timedelta(days=settings.session_days), request.headers.get("User-Agent", "")
    )
    response = redirect(target, 303)
    set_session_cookie(response, token)
    return response


def mail_later(to: str, subject: str, body: str) -> None:
    """Send a mail in the background: the answer must not take longer (or differ) because a mail goes out."""
    settings = current_platform().settings

    async def send() -> None:
        try:
            await send_mail(settings, to, subject, body)
        except MailError as exc:
            log.warning("%s (mail to %s: %s)", exc, to, subject)

    current_app.add_background_task(send)


def retry_message(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"Too many attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."


# --------------------------------------------------------------------------- sign up


async def signup_page(status: int = 200, **context: object) -> Response:
    stamp = auth.form_stamp(await console().server_secret())
    return await page("console/signup.html", status, stamp=stamp, **context)


@blueprint.route("/signup", methods=["GET", "POST"])
async def signup() -> ResponseTypes:
    if request.method == "GET":
        if g.user is not None:
            return redirect(url_for("console.campaigns.index"))
        return await signup_page()
    form = await request.form
    email = normal_email(form.get("email", ""))
    password = form.get("password", "")
    state = console()
    plat = current_platform()
    address = "signup-ip:" + client_address()

    async def refuse(message: str, status: int = 400) -> Response:
        return await signup_page(status, error=message, email=email)

    if form.get("website"):  # the honeypot: invisible to people, irresistible to form-filling bots
        return await refuse("Sign-up refused.")
    problem = auth.stamp_problem(await state.server_secret(), form.get("stamp", ""), plat.settings.signup_min_seconds)
    if problem:
        return await refuse(problem)
    wait = state.signup_limiter.retry_after(address)
    if wait:
        return await refuse(retry_message(wait), 429)
    if not plausible_email(email):
        return await refuse("Enter a valid e-mail address.")
    problem = auth.password_problem(password, email)
    if problem:
        return await refuse(problem)
    if password != form.get("password2", password):
        return await refuse("The two passwords differ.")
    state.signup_limiter.hit(address)
    # Hashed either way, and answered with the same redirect: the answer tells no one whether the
    # address has an account. Its owner gets a mail instead.
    password_hash = await auth.hash_password(password)
    target = url_for("console.campaigns.index")
    if await plat.storage.user_by_email(email) is not None:
        mail_later(
            email,
            "Your distribute account",
            f"Someone (hopefully you) tried to sign up with {email}, which has an account already.\n\n"
            f"Sign in here, or reset its password if you forgot it: {own_url()}{url_for('console.accounts.signin')}\n",
        )
        return redirect(target, 303)
    verify = plat.settings.verifies_email
    user = await plat.storage.create_user(email, password_hash, verified=not verify)
    if verify:
        await mail_verification(user.id, email)
    return await start_session(user.id, target)


# --------------------------------------------------------------------------- address verification


async def mail_verification(user_id: int, email: str) -> None:
    """Mail a new verification link (earlier links stop working); nothing if the address is verified."""
    settings = current_platform().settings
    token = await console().accounts.create_verification(user_id, timedelta(hours=settings.verify_hours))
    if token is None:
        return
    link = f"{own_url()}{url_for('console.accounts.verify_email', token=token)}"
    body = (
        f"Someone (hopefully you) signed up for a distribute account with {email}.\n\n"
        f"Confirm that this address is yours here (the link works for {settings.verify_hours:g} hours):\n\n"
        f"{link}\n\nIf it was not you, ignore this mail.\n"
    )
    mail_later(email, "Verify your e-mail address for distribute", body)


@blueprint.app_context_processor
def verification_context() -> dict[str, bool]:
    """`unverified`: the signed-in user must still verify the address (the pages then show a banner)."""
    user = g.get("user")
    unverified = user is not None and not user.verified and current_platform().settings.verifies_email
    return {"unverified": unverified}


@blueprint.get("/verify/<token>")
async def verify_email(token: str) -> Response:
    user = await console().accounts.verify_email(token)
    if user is not None and g.get("user") is not None and g.user.id == user.id:
        g.user = user  # this very page no longer shows the banner
    response = await page("console/verified.html", 200 if user else 410, verified=user is not None)
    # The token is in this page's URL: never send it on in a Referer header.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@blueprint.post("/account/verify")
@login_required
async def resend_verification() -> ResponseTypes:
    limiter = console().reset_limiter  # mail on demand: limited like reset requests
    key = "verify-user:" + str(g.user.id)
    wait = limiter.retry_after(key)
    if wait:
        return await account_page(429, notice=retry_message(wait))
    limiter.hit(key)
    await mail_verification(g.user.id, g.user.email)
    return redirect(url_for("console.accounts.account", done="verify-sent"), 303)


# --------------------------------------------------------------------------- sign in and out


@blueprint.route("/signin", methods=["GET", "POST"])
async def signin() -> ResponseTypes:
    notice = NOTICES.get(request.args.get("done", ""))
    target = safe_next(request.args.get("next"), url_for("console.campaigns.index"))
    if request.method == "GET":
        if g.user is not None:
            return redirect(target)
        return await page("console/signin.html", notice=notice, next=target)
    form = await request.form
    email = normal_email(form.get("email", ""))
    state = console()
    by_email, by_address = "signin-email:" + email, "signin-ip:" + client_address()
    wait = max(state.signin_limiter.retry_after(by_email), state.signin_ip_limiter.retry_after(by_address))
    if wait:
        response = await page("console/signin.html", 429, error=retry_message(wait), email=email, next=target)
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    # Counted before the (deliberately expensive) check, so that a flood is refused before it costs.
    state.signin_limiter.hit(by_email)
    state.signin_ip_limiter.hit(by_address)
    found = await state.accounts.credentials(email)
    password_hash = found[1] if found else None
    right = await auth.verify_password(password_hash, form.get("password", ""))  # also for an unknown address
    if found is None or not right:
        return await page(
            "console/signin.html", 401, error="Wrong e-mail address or password.", email=email, next=target
        )
    state.signin_limiter.clear(by_email)
    state.signin_ip_limiter.undo(by_address)
    return await start_session(found[0].id, safe_next(form.get("next"), target))


@blueprint.post("/signout")
async def signout() -> ResponseTypes:
    token = session_token()
    if token:
        await console().accounts.end_session(token)
    response = redirect(url_for("console.accounts.signin", done="signedout"), 303)
    clear_session_cookie(response)
    return response


# --------------------------------------------------------------------------- the account page


async def account_page(status: int = 200, **context: object) -> Response:
    tokens = await console().accounts.tokens(g.user.id)
    notice = context.pop("notice", None) or NOTICES.get(request.args.get("done", ""))
    return await page(
        "console/account.html", status, tokens=tokens, notice=notice, display_name_max=DISPLAY_NAME_MAX_CHARS, **context
    )


@blueprint.get("/account")
@login_required
async def account() -> Response:
    return await account_page()


@blueprint.post("/account/name")
@login_required
async def set_display_name() -> ResponseTypes:
    name = (await request.form).get("display_name", "").strip()
    problem = display_name_problem(name)
    if problem:
        return await account_page(400, name_error=problem, display_name=name)
    await console().accounts.set_display_name(g.user.id, name)
    return redirect(url_for("console.accounts.account", done="name" if name else "name-cleared"), 303)


async def password_confirmed(field: str) -> bool:
    """Whether the form's `field` holds the signed-in user's password (asked again before a big change)."""
    given = (await request.form).get(field, "")
    return await auth.verify_password(await console().accounts.password_hash(g.user.id), given)


@blueprint.post("/account/password")
@login_required
async def change_password() -> ResponseTypes:
    if not await password_confirmed("current"):
        return await account_page(400, password_error="The current password is wrong.")
    form = await request.form
    new = form.get("password", "")
    problem = auth.password_problem(new, g.user.email)
    if problem:
        return await account_page(400, password_error=problem)
    accounts = console().accounts
    await accounts.set_password(g.user.id, await auth.hash_password(new))  # ends every session
    done = "password"
    if form.get("revoke_tokens"):
        await accounts.revoke_tokens(g.user.id)
        done = "password-tokens"
    return await start_session(g.user.id, url_for("console.accounts.account", done=done))


@blueprint.post("/account/tokens")
@login_required
async def create_token() -> Response:
    name = (await request.form).get("name", "").strip()[:100] or "console"
    token = await current_platform().storage.create_token(g.user.id, name)
    return await account_page(201, new_token=token, new_token_name=name)


@blueprint.post("/account/tokens/<int:token_id>/revoke")
@login_required
async def revoke_token(token_id: int) -> ResponseTypes:
    if not await console().accounts.revoke_token(g.user.id, token_id):
        return await page("console/error.html", 404, title="Not found", message=f"Token {token_id} not found.")
    return redirect(url_for("console.accounts.account", done="revoked"), 303)


@blueprint.post("/account/delete")
@login_required
async def delete_account() -> ResponseTypes:
    if not await password_confirmed("password"):
        return await account_page(400, delete_error="The password is wrong; nothing was deleted.")
    await current_platform().campaigns.delete_account(g.user)
    response = redirect(url_for("console.pages.home", done="deleted"), 303)
    clear_session_cookie(response)
    return response


# --------------------------------------------------------------------------- password reset


@blueprint.route("/reset", methods=["GET", "POST"])
async def reset_request() -> Response:
    if request.method == "GET":
        return await page("console/reset_request.html")
    email = normal_email((await request.form).get("email", ""))
    limiter = console().reset_limiter
    keys = ("reset-ip:" + client_address(), "reset-email:" + email)
    wait = limiter.retry_after(*keys)
    if wait:
        return await page("console/reset_request.html", 429, error=retry_message(wait), email=email)
    limiter.hit(*keys)
    plat = current_platform()
    user = await plat.storage.user_by_email(email) if plausible_email(email) else None
    # One hash either way (the cost of the sign-up and sign-in paths), so the time tells nothing either.
    await auth.hash_password(secrets.token_urlsafe(16))
    if user is not None:
        settings = plat.settings
        token = await console().accounts.create_reset(user.id, timedelta(minutes=settings.reset_minutes))
        link = f"{own_url()}{url_for('console.accounts.reset_form', token=token)}"
        body = (
            f"Someone (hopefully you) asked to reset the password of your distribute account {email}.\n\n"
            f"Choose a new password here (the link works once, for {settings.reset_minutes:g} minutes):\n\n"
            f"{link}\n\nIf it was not you, ignore this mail: your password stays as it is.\n"
        )
        mail_later(email, "Reset your distribute password", body)
    # The same answer whether or not the address has an account: the page reveals no accounts.
    return await page("console/reset_sent.html", email=email)


@blueprint.route("/reset/<token>", methods=["GET", "POST"])
async def reset_form(token: str) -> ResponseTypes:
    accounts = console().accounts
    response: ResponseTypes
    if request.method == "GET":
        valid = await accounts.reset_valid(token)
        response = await page("console/reset_form.html", 200 if valid else 410, valid=valid, token=token)
    else:
        password = (await request.form).get("password", "")
        problem = auth.password_problem(password)
        if problem:
            response = await page("console/reset_form.html", 400, valid=True, token=token, error=problem)
        elif await accounts.redeem_reset(token, await auth.hash_password(password)) is None:
            response = await page("console/reset_form.html", 410, valid=False, token=token)
        else:
            response = redirect(url_for("console.accounts.signin", done="reset"), 303)
    # The token is in this page's URL: never send it on in a Referer header.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
