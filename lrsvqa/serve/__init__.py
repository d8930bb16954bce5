"""``lrsvqa serve``: a map page and a JSON API over one loaded model.

Needs the ``serve`` extra (``pip install 'lrsvqa[serve]'``): FastAPI, uvicorn, rio-tiler.
"""

from lrsvqa.serve.app import create_app
from lrsvqa.serve.config import TOKEN_ENV, ServeConfig, check_bind, is_loopback

__all__ = ["TOKEN_ENV", "ServeConfig", "check_bind", "create_app", "is_loopback"]
