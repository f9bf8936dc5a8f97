"""The management server: the REST API over the services, served by uvicorn."""

from runas.server.app import create_app
from runas.server.settings import ServerSettings, load_server_settings

__all__ = ["ServerSettings", "create_app", "load_server_settings"]
