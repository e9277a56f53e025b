"""Eddy's event-bus module for functions in the OpenWhisk shape.

``publish_event(type, data)`` (also ``publishEvent``) publishes to the stream the manifest's
``[event_bus]`` table routes ``type`` to::

    from eddy_events import publish_event
"""

from eddy import publish_event, publishEvent  # noqa: F401

__all__ = ["publish_event", "publishEvent"]
