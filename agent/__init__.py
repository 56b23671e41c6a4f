"""store-edge-agent: the core and the driver SDK."""

from importlib import metadata

try:
    __version__ = metadata.version("store-edge-agent")
except metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"
