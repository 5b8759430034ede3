"""``natkit serve``: every natkit server in one process from one TOML file.

- :mod:`natkit.serve.settings`: ``natkit.toml`` (:class:`ServeSettings`,
  :func:`build_serve_settings`, the embedded defaults);
- :mod:`natkit.serve.runner`: :class:`ServeRunner`, composing the servers;
- :mod:`natkit.serve.media`: the SIP element's media handler that anchors
  calls of NATed user agents without ICE on the media relay;
- :mod:`natkit.serve.status`: the shared Prometheus registry, ``/status.json``
  and the status page.
"""

from natkit.serve.settings import ConfigError, ServeSettings, build_serve_settings

__all__ = ["ConfigError", "ServeSettings", "build_serve_settings"]
