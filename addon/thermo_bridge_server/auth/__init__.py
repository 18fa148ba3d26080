"""Who is calling: Auth0 access tokens, verified whatever carried them.

``tokens`` verifies against the tenant's JWKS, ``bearer`` is the HTTP header and middleware,
``devauth`` the self-issuing dev mode.
"""

from thermo_bridge_server.config import AuthSettings

from .tokens import Authenticator, Principal, insufficient_scope_error

__all__ = ["AuthSettings", "Authenticator", "Principal", "insufficient_scope_error"]
