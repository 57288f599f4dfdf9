"""The suppression vocabulary and key: who a tenant must not mail.

A suppression is keyed by the address's email key -- the one normalisation
(:func:`email_engine_assets.quality.syntax.check_address`) that also keys ``contacts.email`` -- so
``Alice@Example.COM`` suppressed by hand also stops the contact ``alice@example.com``.
"""

from __future__ import annotations

from email_engine_assets.quality.syntax import check_address

# unsubscribed: the person asked; bounced: hard bounce / soft bounces past the policy;
# complained: a spam complaint (feedback loop); manual: an operator's `suppress`; erased: forgotten.
SUPPRESSION_REASONS: tuple[str, ...] = ("unsubscribed", "bounced", "complained", "manual", "erased")


def suppression_key(address: str) -> str:
    """The key under which ``address`` is suppressed; ``ValueError`` naming the problem if it is no address."""
    verdict = check_address(address)
    if verdict.email_key is None:
        raise ValueError(f"not a valid email address: {verdict.reason or 'empty'}")
    return verdict.email_key
