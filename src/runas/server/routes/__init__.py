"""The API's routers, one module per resource; each exposes ``build(settings) -> APIRouter``."""
