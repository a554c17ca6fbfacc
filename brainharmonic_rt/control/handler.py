"""The command handler of a running service: validated MQTT commands → the live pipeline.

Every command is checked completely before anything changes, so a refused one (a
:class:`~.messages.CommandError` naming the field) leaves the music exactly as it was; no
command stops the music. Changes are heard at once, not after the composing lookahead:

* tempo, key/scale, register, unmute, the end of a solo: through :meth:`Engine.apply`, the one owner
  of live edits: the composer changes from ``now + CUT_MARGIN`` on, the notes already scheduled
  beyond that point are dropped and composed again with the last brain state (in either mode); the
  grid phase continues across a tempo change;
* mute, solo: the silenced instruments' pending notes are dropped, their sounding notes get
  note_off now, their channels CC 123;
* program: a program_change goes to every sink now;
* panic: note_off for every sounding note and CC 123/64 on every channel; the music resumes
  with the next window;
* temperature: the learned generator samples with it; the classic composer keeps it for a switch to learned;
* mode: the engine switches composers live (``Engine.set_mode``: same grid, plan, arbiter);
* recording: a session folder under ``record.dir`` opens or closes while the music plays;
* reload: the TOML the service was started with is read again; what changed in it since it was last
  loaded (tempo, key, scale, polyphony, smoothing, per-instrument program/register/mute) changes live,
  so an unchanged file leaves a tempo or key the brain moved alone; every other difference is
  reported as needing a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mido

from ..config import InstrumentSettings, Settings, load_settings
from ..errors import BrainharmonicError, ConfigError
from ..music.scales import scale_pitches
from ..recording import SessionRecorder
from .messages import (
    Command,
    CommandError,
    Mute,
    Panic,
    ReloadConfig,
    SetKey,
    SetMode,
    SetProgram,
    SetRegister,
    SetTemperature,
    SetTempo,
    Solo,
    StartRecording,
    StopRecording,
    Unmute,
)

if TYPE_CHECKING:
    from ..music.composer import Composer
    from ..pipeline import Engine, LivePipeline
    from ..sinks.scheduler import Scheduler
    from .sync import BeatSync

log = logging.getLogger(__name__)

#: Music settings a reload may change while playing (instruments are compared field by field).
LIVE_MUSIC = ("tempo", "key", "scale", "max_polyphony", "smoothing", "instruments")
#: Instrument fields a reload may change while playing.
LIVE_INSTRUMENT = ("program", "low", "high", "muted")


class PipelineHandler:
    """Applies commands to ``pipeline`` (a :class:`~brainharmonic_rt.pipeline.LivePipeline`).

    Parameters
    ----------
    pipeline : the running pipeline (commands before its first window are refused politely).
    config_file : the TOML file the service was started with (for ``reload_config``).
    overrides : the command-line layer used at start, applied again on reload.
    sync : multi-performer sync; a follower refuses local tempo/key changes.
    on_change : called after a change of tempo, key, register or instrument state (publish it).
    """

    def __init__(
        self,
        pipeline: LivePipeline,
        *,
        config_file: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        sync: BeatSync | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.config_file = config_file
        self.overrides = dict(overrides or {})
        self.sync = sync
        self.on_change = on_change
        self.own_recorder: SessionRecorder | None = None  #: a recording started by command
        #: the settings as last loaded (start, then each reload): a reload applies what changed in the file since,
        #: never what the brain moved meanwhile (tempo, key), which would pin them
        self.loaded: Settings = pipeline.settings
        self._closing: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ dispatch

    def apply(self, cmd: Command) -> dict[str, Any]:
        match cmd:
            case SetTempo(bpm=bpm):
                return self._tempo(bpm)
            case SetKey(key=key, scale=scale):
                return self._key(key, scale)
            case Mute(instrument=name):
                return self._mute(name, True)
            case Unmute(instrument=name):
                return self._mute(name, False)
            case Solo(instrument=name):
                return self._solo(name)
            case SetProgram(instrument=name, program=program):
                return self._program(name, program)
            case SetRegister(instrument=name, low=low, high=high):
                return self._register(name, low, high)
            case SetTemperature(temperature=t):
                return self._temperature(t)
            case SetMode(mode=mode):
                return self._mode(mode)
            case Panic():
                self._parts()[1].panic()
                return {"panic": True, "note": "all notes off now; the music goes on with the next window"}
            case StartRecording(label=label):
                return self._start_recording(label)
            case StopRecording():
                return self._stop_recording()
            case ReloadConfig():
                return self._reload()
        raise CommandError("cmd", f"'{cmd.cmd}' has no handler in this service")  # pragma: no cover

    # ------------------------------------------------------------------ helpers

    def _parts(self) -> tuple[Engine, Scheduler, Composer[Any]]:
        """(engine, scheduler, composer) of the running pipeline, or a polite refusal."""
        p = self.pipeline
        if p.engine is not None and p.scheduler is not None and not p.scheduler.running:
            raise CommandError(None, "cannot be applied: the service is stopping")
        if p.engine is None or p.scheduler is None:
            raise CommandError(
                None,
                "cannot be applied yet: the service is still waiting for the EEG stream; "
                "send it again once music plays",
            )
        return p.engine, p.scheduler, p.engine.composer

    def _instrument(self, composer: Composer[Any], name: str) -> InstrumentSettings:
        instruments = composer.instruments
        if name not in instruments:
            raise CommandError(
                "instrument", f"names no instrument here (got {name!r}); use one of {', '.join(instruments)}"
            )
        return instruments[name]

    def _refuse_if_following(self, field: str, cmd: str) -> None:
        if self.sync is not None and self.sync.following:
            leader = self.sync.reference
            raise CommandError(
                field,
                f"is set by the leader '{leader}' while this instance follows it; "
                f"send {cmd} to brainharmonic/{leader}/cmd",
            )

    def _cut(self, change: Callable[[float], object]) -> float:
        """Apply ``change(at)`` through the engine (heard from ``at`` ≈ now on), then publish the change.

        ``change`` must validate before it mutates: if it raises, nothing has changed.
        """
        engine, _, _ = self._parts()
        at = engine.apply(change)
        self._changed()
        return at

    def _when(self, at: float) -> dict[str, float]:
        """When a change is heard: music time (s) and this machine's ``time.monotonic()`` value."""
        origin = self.pipeline.scheduler.origin if self.pipeline.scheduler is not None else None
        out = {"from_time": round(at, 6)}
        if origin is not None:
            out["from_monotonic"] = round(origin + at, 6)
        return out

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # telemetry must never undo an applied command
                log.exception("Publishing a change failed.")

    # ------------------------------------------------------------------ music

    def _tempo(self, bpm: float) -> dict[str, Any]:
        _, _, composer = self._parts()
        self._refuse_if_following("bpm", "set_tempo")
        clock_in = self.pipeline.settings.output.clock_in
        if clock_in is not None:
            raise CommandError("bpm", f"is set by the MIDI clock on {clock_in!r} (output.clock_in); change it there")
        at = self._cut(lambda at: composer.retime(at, bpm))
        return {"tempo": bpm, **self._when(at), "from_beat": round(composer.beat_at(at), 4)}

    def _key(self, key: str, scale: str | None) -> dict[str, Any]:
        _, _, composer = self._parts()
        self._refuse_if_following("key", "set_key")

        def change(at: float) -> None:
            try:
                composer.set_key(key, scale)
            except ConfigError as exc:
                raise CommandError("scale" if scale else "key", f"does not fit every instrument: {exc}") from None

        at = self._cut(change)
        return {"key": composer.key, "scale": composer.scale, **self._when(at)}

    def _register(self, name: str, low: int, high: int) -> dict[str, Any]:
        _, _, composer = self._parts()
        self._instrument(composer, name)
        try:
            scale_pitches(composer.key, composer.scale, low, high)
        except ConfigError:
            raise CommandError(
                "high", f"{low}..{high} holds no note of {composer.key} {composer.scale}; widen the register"
            ) from None
        at = self._cut(lambda at: composer.set_register(name, low, high))
        return {"instrument": name, "low": low, "high": high, **self._when(at)}

    def _mute(self, name: str, muted: bool) -> dict[str, Any]:
        _, scheduler, composer = self._parts()
        inst = self._instrument(composer, name)
        composer.set_muted(name, muted)
        if muted:
            dropped = scheduler.cancel(instruments={name}, end_sounding=True, channels={inst.channel})
            self._changed()
            return {"instrument": name, "muted": True, "dropped_notes": dropped}
        at = self._cut(lambda at: None)  # compose the unmuted instrument into what is already scheduled
        return {"instrument": name, "muted": False, "from_time": round(at, 6)}

    def _solo(self, name: str | None) -> dict[str, Any]:
        _, scheduler, composer = self._parts()
        if name is not None:
            self._instrument(composer, name)
        before: set[str] = composer.silenced()
        composer.set_solo(name)
        after: set[str] = composer.silenced()
        newly = after - before
        if newly:
            channels = {composer.instruments[n].channel for n in newly}
            scheduler.cancel(instruments=newly, end_sounding=True, channels=channels)
        if before - after:
            self._cut(lambda at: None)
        else:
            self._changed()
        return {"solo": name, "silent": sorted(after)}

    def _program(self, name: str, program: int) -> dict[str, Any]:
        engine, scheduler, composer = self._parts()
        inst = self._instrument(composer, name)
        sharing = [n for n, i in composer.instruments.items() if n != name and i.channel == inst.channel]
        if sharing:
            raise CommandError(
                "instrument",
                f"shares MIDI channel {inst.channel} with {sharing[0]!r}, so a program change would change both; "
                "give them separate channels in music.instruments",
            )
        scheduler.send_now(mido.Message("program_change", channel=inst.channel, program=program))
        engine.set_program(name, program)
        self._record_program(scheduler, name, inst.channel, program)
        self._changed()
        return {"instrument": name, "program": program, "channel": inst.channel}

    def _temperature(self, t: float) -> dict[str, Any]:
        _, _, composer = self._parts()
        if composer.set_temperature(t):
            return {"temperature": t, "applied_to": type(composer).__name__}
        return {
            "temperature": t,
            "stored": True,
            "note": "the classic composer does not sample; the learned generator takes this value in learned mode",
        }

    def _mode(self, mode: str) -> dict[str, Any]:
        engine, _, _ = self._parts()
        if mode == engine.mode:
            return {"mode": mode, "changed": False}
        try:
            result = engine.set_mode(mode)  # the new composer adopts the old one's temperature too
        except BrainharmonicError as exc:
            raise CommandError("mode", f"cannot switch to '{mode}' now: {exc}") from None
        self._changed()
        return {"mode": mode, "changed": True, **result}

    # ------------------------------------------------------------------ recording

    def _record_program(self, scheduler: Scheduler, name: str, channel: int, program: int) -> None:
        """A program change goes into the session (notes.mid plays it from its time on)."""
        if self.pipeline.recorder is not None:
            self.pipeline.recorder.program_change(scheduler.music_now(), name, channel, program)

    def _start_recording(self, label: str | None) -> dict[str, Any]:
        p = self.pipeline
        self._parts()
        if p.recorder is not None:
            raise CommandError(None, f"cannot start a recording: one is running in {p.recorder.folder}; stop it first")
        root = p.record_root or p.settings.record.dir
        if root is None:
            raise CommandError(
                None,
                "cannot start a recording: no folder is set; set record.dir in the config (or run with --record DIR)",
            )
        name = f"{label or 'session'}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        recorder = SessionRecorder(Path(root), p.settings, p.source.info, name=name)
        try:
            recorder.__enter__()
        except BrainharmonicError as exc:
            raise CommandError(None, f"cannot start a recording: {exc}") from None
        if p.engine is not None:
            recorder.set_instruments(p.engine.composer.instruments)
        p.recorder = self.own_recorder = recorder
        return {"recording": True, "folder": str(recorder.folder)}

    def _stop_recording(self) -> dict[str, Any]:
        p = self.pipeline
        recorder = p.recorder
        if recorder is None:
            raise CommandError(None, "cannot stop a recording: none is running; send start_recording first")
        p.recorder = None
        if recorder is self.own_recorder:
            self.own_recorder = None
        recorder.event("stopped", reason="stop_recording command")
        # Closing writes notes.mid (seconds for a long session): off the event loop, not waited for.
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(recorder.close))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return {"recording": False, "folder": str(recorder.folder)}

    async def aclose(self) -> None:
        """Finish closing recordings (call after the pipeline stopped)."""
        if self.own_recorder is not None and self.pipeline.recorder is self.own_recorder:
            self.pipeline.recorder = None
            self.own_recorder.event("stopped", reason=self.pipeline.stats.stopped_by or "service stopped")
            await asyncio.to_thread(self.own_recorder.close)
            self.own_recorder = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # ------------------------------------------------------------------ reload

    def _reload(self) -> dict[str, Any]:
        _, _, composer = self._parts()
        if self.config_file is None:
            raise CommandError(None, "cannot reload: the service was started without --config, so there is no file")
        try:
            new = load_settings(self.config_file, **self.overrides)
        except ConfigError as exc:
            raise CommandError(None, f"found a problem in {self.config_file} and changed nothing: {exc}") from None
        from ..music.ensemble import resolve_instruments

        current: dict[str, InstrumentSettings] = composer.instruments
        try:
            wanted = resolve_instruments(list(current), new.music)
        except ConfigError as exc:
            raise CommandError(None, f"found a problem in {self.config_file} and changed nothing: {exc}") from None
        restart = _restart_needed(self.pipeline.settings, new)
        for name, inst in wanted.items():
            for f in InstrumentSettings.model_fields:
                if f not in LIVE_INSTRUMENT and getattr(inst, f) != getattr(current[name], f):
                    restart.append(f"music.instruments.{name}.{f}")
        following = self.sync is not None and self.sync.following
        music = new.music
        key = composer.key if following else music.key
        scale = composer.scale if following else music.scale
        registers = {
            n: (i.low, i.high) for n, i in wanted.items() if (i.low, i.high) != (current[n].low, current[n].high)
        }
        for inst in wanted.values():
            try:
                scale_pitches(key, scale, inst.low, inst.high)
            except ConfigError as exc:
                raise CommandError(None, f"found a problem in {self.config_file} and changed nothing: {exc}") from None
        programs = {n: i.program for n, i in wanted.items() if i.program != current[n].program}
        for name in programs:
            ch = current[name].channel
            if any(n != name and i.channel == ch and i.program != wanted[name].program for n, i in wanted.items()):
                raise CommandError(None, f"cannot give {name!r} program {programs[name]}: its channel {ch} is shared")
        applied: dict[str, Any] = {}
        # Everything is checked: apply. Instruments first (programs, mutes), then the timed changes.
        _, scheduler, _ = self._parts()
        for name, program in programs.items():
            scheduler.send_now(mido.Message("program_change", channel=current[name].channel, program=program))
            composer.set_program(name, program)
            self._record_program(scheduler, name, current[name].channel, program)
            applied[f"music.instruments.{name}.program"] = program
        muted_now = set(composer.muted)
        for name, inst in wanted.items():
            if inst.muted != (name in muted_now):
                composer.set_muted(name, inst.muted)
                applied[f"music.instruments.{name}.muted"] = inst.muted
                if inst.muted:
                    scheduler.cancel(instruments={name}, end_sounding=True, channels={inst.channel})
        composer.set_limits(max_polyphony=music.max_polyphony, smoothing=music.smoothing)
        before = self.loaded.music
        for f in ("max_polyphony", "smoothing"):
            if getattr(music, f) != getattr(before, f):
                applied[f"music.{f}"] = getattr(music, f)
        tempo_changes = not following and abs(before.tempo - music.tempo) > 1e-9
        key_changes = not following and (key, scale) != (before.key, before.scale)
        if tempo_changes or key_changes or registers:

            def change(at: float) -> None:
                composer.set_key(key, scale, registers=registers)
                if tempo_changes:
                    composer.retime(at, music.tempo)

            self._cut(change)
            if tempo_changes:
                applied["music.tempo"] = music.tempo
            if key_changes:
                applied["music.key"], applied["music.scale"] = key, scale
            for name, (low, high) in registers.items():
                applied[f"music.instruments.{name}.register"] = [low, high]
        else:
            self._changed()
        self.loaded = new
        out: dict[str, Any] = {"file": str(self.config_file), "applied": applied, "needs_restart": sorted(set(restart))}
        notes = []
        if restart:
            notes.append(
                f"{', '.join(sorted(set(restart)))} changed in the file but only take effect after a restart; "
                "restart the service to apply them"
            )
        if following:
            notes.append(f"tempo and key come from the leader '{self.sync.reference if self.sync else ''}'")
        if notes:
            out["message"] = "; ".join(notes) + "."
        return out


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _restart_needed(old: Settings, new: Settings) -> list[str]:
    """Dotted names of settings that differ and cannot change while playing."""
    a = _flatten(old.model_dump(mode="json", exclude={"music": set(LIVE_MUSIC)}))
    b = _flatten(new.model_dump(mode="json", exclude={"music": set(LIVE_MUSIC)}))
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and not k.startswith("control.password")]
