"""MQTT control plane: validated commands in, rate-limited telemetry out (see ``mqtt.py`` for topics)."""

from .messages import (
    COMMAND_KINDS,
    BrainTelemetry,
    Command,
    CommandError,
    ErrorReply,
    HealthTelemetry,
    MusicTelemetry,
    Reply,
    Status,
    parse_command,
)
from .mqtt import CommandHandler, ControlPlane, Topics

__all__ = [
    "COMMAND_KINDS",
    "BrainTelemetry",
    "Command",
    "CommandError",
    "CommandHandler",
    "ControlPlane",
    "ErrorReply",
    "HealthTelemetry",
    "MusicTelemetry",
    "Reply",
    "Status",
    "Topics",
    "parse_command",
]
