"""Eddy's Python SDK: the thin layer between a Python function and the Eddy host.

A function module defines ``handle(event)`` returning a :class:`Response` (or raising), and
ends with ``Handler = eddy.handler(handle)``. ``componentize-py`` (run by ``eddy deploy
--build``) turns the module into a WebAssembly component of the ``eddy:function`` world.

Exceptions map to outcomes: :class:`Rejected` is a 400 (the event is bad: dead-lettered, never
retried); any other exception is a 500 (retried with backoff) carrying its message.
"""

import json as _json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config as _config
from wit_world.imports import idempotency as _idempotency
from wit_world.imports import logging as _logging
from wit_world.imports import publisher as _publisher
from wit_world.imports import types as _types


class Rejected(Exception):
    """Raised by a function to reject a bad event: a 400, never retried."""


class HostError(Exception):
    """A host call was refused: denied, invalid or unavailable."""


def _reason(error):
    kind = type(error.value).__name__.split("_")[-1].lower()
    return f"{kind}: {error.value.value}"


class Event:
    """The event being handled: CloudEvents attributes, payload and delivery facts."""

    def __init__(self, raw):
        self._raw = raw

    @property
    def id(self):
        """The event's id."""
        return self._raw.id

    @property
    def type(self):
        """The event's type, e.g. ``OrderPlaced``."""
        return self._raw.type

    @property
    def source(self):
        """Where the event happened."""
        return self._raw.source

    @property
    def subject(self):
        """The subject within the source, if any."""
        return self._raw.subject

    @property
    def data(self):
        """The payload as bytes."""
        return bytes(self._raw.data)

    @property
    def attempt(self):
        """Which attempt this is, from 1."""
        return self._raw.delivery.attempt

    @property
    def stream(self):
        """The stream the event came from, if any."""
        return self._raw.delivery.stream

    def json(self):
        """The payload parsed as JSON; a bad payload rejects the event."""
        try:
            return _json.loads(self._raw.data)
        except ValueError as error:
            raise Rejected(f"event {self.id}: data is not JSON: {error}") from error

    def extension(self, name):
        """An extension attribute (e.g. ``correlationid``), or None."""
        for key, value in self._raw.extensions:
            if key == name:
                return value
        return None


class Response:
    """A function's answer: the status is the outcome (2xx done, 4xx rejected, 5xx failed)."""

    def __init__(self, status=200, body=b""):
        self.status = status
        self.body = body if isinstance(body, bytes) else str(body).encode()

    @staticmethod
    def ok(value=None):
        """200, with ``value`` as a JSON body if given."""
        return Response.json(200, value) if value is not None else Response(200)

    @staticmethod
    def json(status, value):
        """``status`` with ``value`` as a JSON body."""
        return Response(status, _json.dumps(value).encode())


def publish(stream, event_type, value):
    """Publishes an event of ``event_type`` with ``value`` as JSON to ``stream``; returns its id."""
    try:
        return _publisher.publish(stream, event_type, _json.dumps(value).encode())
    except Err as error:
        raise HostError(f"publish {event_type} to {stream} failed: {_reason(error)}") from None


def once(key, ttl_seconds):
    """True the first time ``key`` is claimed by this function, False once an invocation that
    claimed it succeeded (see the README's ``once``). Raises HostError while another invocation
    holds it: the invocation then fails and its retry finds it settled. Kept for
    ``ttl_seconds`` if this invocation succeeds, released if it fails."""
    try:
        return _idempotency.once(key, max(1, int(ttl_seconds)))
    except Err as error:
        raise HostError(f"once {key!r} failed: {_reason(error)}") from None


def config(key, default=None):
    """The function's setting ``key`` from its manifest's ``[config]`` table."""
    value = _config.get(key)
    return default if value is None else value


class log:
    """Log lines kept in the host's logs and the invocation's record."""

    @staticmethod
    def debug(message):
        """Logs a debug line."""
        _logging.log(_logging.Level.DEBUG, str(message))

    @staticmethod
    def info(message):
        """Logs an info line."""
        _logging.log(_logging.Level.INFO, str(message))

    @staticmethod
    def warn(message):
        """Logs a warning."""
        _logging.log(_logging.Level.WARN, str(message))

    @staticmethod
    def error(message):
        """Logs an error."""
        _logging.log(_logging.Level.ERROR, str(message))


def handler(handle):
    """The component's export for ``handle(event) -> Response``: assign it to ``Handler``."""

    class Handler(exports.Handler):
        def handle(self, event):
            try:
                response = handle(Event(event))
            except Rejected as error:
                response = Response.json(400, {"error": str(error)})
            except Exception as error:  # a failure: retried by the host
                response = Response.json(500, {"error": f"{type(error).__name__}: {error}"})
            if response is None:
                response = Response(200)
            return _types.Response(status=response.status, body=response.body)

    return Handler
