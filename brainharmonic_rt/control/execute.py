"""One command payload → one reply or error: the path every control surface shares.

MQTT (``mqtt.py``) and the web page (``web/server.py``) both hand the raw bytes they received
to :func:`execute`, so a command means the same thing, is validated the same way and is
answered with the same :class:`~.messages.Reply` / :class:`~.messages.ErrorReply` whichever
way it came. Only the transport differs (a topic, an HTTP response).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

import pydantic_core
from pydantic import BaseModel

from ..errors import BrainharmonicError
from .messages import Command, CommandError, ErrorReply, Reply, parse_command, peek_id

log = logging.getLogger(__name__)


class CommandHandler(Protocol):
    """Applies validated commands to the running service.

    ``apply`` runs on the event loop: keep it quick (hand work to the pipeline and return). It
    returns the ack payload (JSON-able), or an awaitable of it; it raises
    :class:`~brainharmonic_rt.control.messages.CommandError` (naming a field),
    :class:`~brainharmonic_rt.errors.BrainharmonicError` or ``ValueError`` to refuse.
    """

    def apply(self, cmd: Command) -> dict[str, Any] | Awaitable[dict[str, Any]]: ...


def rejection(cid: str | None, kind: str | None, exc: CommandError) -> ErrorReply:
    """The error reply for a refused command (nothing was changed)."""
    return ErrorReply(id=cid, cmd=kind, field=exc.field, reason=exc.reason, message=str(exc))


async def execute(handler: CommandHandler, payload: bytes, *, max_bytes: int, timeout: float) -> Reply | ErrorReply:
    """Validate ``payload`` (one JSON command), apply it through ``handler`` and say what happened.

    Never raises for anything the sender did or the handler refused: a malformed payload, a
    refusal, a handler that takes longer than ``timeout`` s, even a bug in the handler, all come
    back as an :class:`ErrorReply` whose ``message`` is one sentence for a person.
    """
    try:
        cmd = parse_command(payload, max_bytes)
    except CommandError as exc:
        return rejection(*peek_id(payload, max_bytes), exc)
    try:
        result: Any = handler.apply(cmd)
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, timeout)
    except CommandError as exc:
        return rejection(cmd.id, cmd.cmd, exc)
    except (BrainharmonicError, ValueError) as exc:
        return rejection(cmd.id, cmd.cmd, CommandError(None, f"'{cmd.cmd}' was refused: {exc}"))
    except TimeoutError:
        reason = f"'{cmd.cmd}' took longer than {timeout} s to apply and was abandoned"
        return rejection(cmd.id, cmd.cmd, CommandError(None, reason))
    except Exception as exc:  # a handler bug must not end the control surface
        log.exception("Command %s failed in the handler.", cmd.cmd)
        reason = f"'{cmd.cmd}' failed inside the service ({type(exc).__name__}: {exc})"
        return rejection(cmd.id, cmd.cmd, CommandError(None, reason))
    ack = result if isinstance(result, Mapping) else {} if result is None else {"value": result}
    try:
        # Checked here, not by the transport: an ack that cannot be JSON must become an error reply.
        encode(ack)
        return Reply(id=cmd.id, cmd=cmd.cmd, result=dict(ack))
    except (TypeError, ValueError, pydantic_core.PydanticSerializationError) as exc:
        reason = f"'{cmd.cmd}' was applied but its acknowledgement is not JSON ({exc})"
        return rejection(cmd.id, cmd.cmd, CommandError(None, reason))


def encode_reply(reply: Reply | ErrorReply) -> bytes:
    """JSON bytes of a reply (NaN/inf as null, numpy values in the result as numbers)."""
    return encode(reply.model_dump())


def encode(payload: BaseModel | Mapping[str, Any]) -> bytes:
    """JSON bytes; NaN/inf become null (browsers reject them), numpy values become numbers/lists."""
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode()
    return pydantic_core.to_json(payload, inf_nan_mode="null", fallback=_fallback)


def _fallback(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")
