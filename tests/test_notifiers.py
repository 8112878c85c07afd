"""Each notifier against a real server (aiosmtpd, mosquitto, prometheus-alertmanager), or for
Slack and the webhook, a local HTTP server that records the requests: Slack's own servers
cannot be reached from here, so that one stand-in is allowed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from matplotlib.image import imread
from slack_sdk.models.blocks import Block

import alert_servers
from shortwatch.alerts.notifiers import Message, PermanentError, build_notifier
from shortwatch.alerts.notifiers.base import DeadLetters
from shortwatch.alerts.notifiers.console import Console
from shortwatch.alerts.routing import routes
from shortwatch.settings import parse_settings

# the real servers' fixtures
alertmanager, http_recorder = alert_servers.alertmanager, alert_servers.http_recorder
mosquitto, smtp_server = alert_servers.mosquitto, alert_servers.smtp_server

STATION = "glovebox-1"


def event(
    cell: str | None = "A1",
    detector: str = "overpotential_drop",
    severity: str = "warning",
    state: str = "firing",
    n: int = 0,
    **kw: Any,
) -> dict[str, Any]:
    t = f"2026-03-01T12:{n:02d}:00+00:00"
    return {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "episode": f"{cell}/{detector}/2026-03-01T12:00:00+00:00",
        "time": t,
        "station": STATION,
        "cell": cell,
        "source": None if cell else "mqtt-0",
        "detector": detector,
        "kind": "cell" if cell else "data",
        "severity": severity,
        "state": state,
        "reminder": False,
        "summary": f"Overpotential fell 38% over 6 half-cycles ({cell})",
        "evidence": {
            "cycle": 41,
            "baseline_asr_ohm_cm2": 52.1,
            "asr_ohm_cm2": 32.3,
            "statistic": 7.9,
            "threshold": 5.0,
        },
        "advice": "Run a CV check to confirm electronic leakage",
    } | kw


def png(width_in: float = 8.0, height_in: float = 5.0, dpi: int = 100) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    fig.subplots().plot([0, 1, 2], [1, 3, 2])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def notifier(tmp_path: Path, **cfg: Any):
    s = parse_settings({"daemon": {"station": STATION, "state_dir": str(tmp_path)}, "alerts": {"notifiers": [cfg]}})
    return build_notifier(s.alerts.notifiers[0], STATION, tmp_path), s.alerts.notifiers[0]


async def test_email_to_real_smtp_has_both_bodies_and_the_plot(tmp_path, smtp_server):
    n, _ = notifier(
        tmp_path,
        type="email",
        host="127.0.0.1",
        port=smtp_server.port,
        security="none",
        sender="shortwatch@lab.example",
        to=["cells@lab.example"],
    )
    e = event(severity="critical")
    answer = await n.send(Message([e], images={e["id"]: png()}, owners=["alice@lab.example", "<@U024BE7LH>"]))
    assert answer == "SMTP Message accepted for delivery"
    (m,) = smtp_server.messages
    assert set(smtp_server.envelopes[0].rcpt_tos) == {"cells@lab.example", "alice@lab.example"}
    assert m["Subject"] == "CRITICAL firing: overpotential_drop on A1"
    assert e["id"] in m["X-Shortwatch-Event-Ids"]
    text = m.get_body(("plain",)).get_content()
    html = m.get_body(("html",)).get_content()
    for part in (text, html):
        assert "Overpotential fell 38%" in part
        assert "baseline_asr_ohm_cm2" in part and "52.1" in part
        assert "Run a CV check" in part
    (att,) = list(m.iter_attachments())
    assert att.get_content_type() == "image/png" and att.get_filename() == "A1-overpotential_drop.png"
    img = imread(io.BytesIO(att.get_content()), format="png")
    assert img.shape[:2] == (500, 800)


async def test_email_starttls_against_a_plain_server_fails_to_retry(tmp_path, smtp_server):
    n, _ = notifier(
        tmp_path,
        type="email",
        host="127.0.0.1",
        port=smtp_server.port,
        security="starttls",
        sender="s@lab.example",
        to=["c@lab.example"],
    )
    with pytest.raises(Exception) as info:  # the server offers no STARTTLS: not sent, not permanent
        await n.send(Message([event()]))
    assert not isinstance(info.value, PermanentError)
    assert smtp_server.messages == []


async def test_slack_blocks_are_valid_block_kit(tmp_path, http_recorder, monkeypatch):
    # Slack's servers cannot be reached from here: a local recorder stands in for the webhook URL
    monkeypatch.setenv("SLACK_HOOK", f"{http_recorder.url}/services/T000/B000/XXXX")
    n, _ = notifier(tmp_path, type="slack", webhook_url_env="SLACK_HOOK")
    msg = Message([event(cell=f"C{i}", n=i) for i in range(3)], owners=["<@U024BE7LH>"])
    answer = await n.send(msg)
    assert answer == "HTTP 200 ok"
    (req,) = http_recorder.requests
    assert req.path == "/services/T000/B000/XXXX"
    payload = json.loads(req.body)
    # slack-sdk's documented webhook payload: text (fallback) and blocks
    assert set(payload) == {"text", "blocks"}
    assert "C0" in payload["text"]
    for b in payload["blocks"]:
        Block.parse(b).validate_json()  # slack-sdk's own model checks (types, lengths, field counts)
    assert payload["blocks"][0]["type"] == "header"
    all_text = json.dumps(payload["blocks"])
    for cell in ("C0", "C1", "C2"):
        assert f"*{cell}*" in all_text
    assert "What to do" in all_text and "<@U024BE7LH>" in all_text and "*statistic*" in all_text


async def test_slack_rejection_is_permanent_and_5xx_is_retried(tmp_path, http_recorder, monkeypatch):
    monkeypatch.setenv("SLACK_HOOK", f"{http_recorder.url}/hook")
    n, _ = notifier(tmp_path, type="slack", webhook_url_env="SLACK_HOOK")
    http_recorder.status, http_recorder.reply = 400, "invalid_payload"
    with pytest.raises(PermanentError, match="invalid_payload"):
        await n.send(Message([event()]))
    http_recorder.status = 503
    with pytest.raises(RuntimeError) as info:
        await n.send(Message([event()]))
    assert not isinstance(info.value, PermanentError)


async def test_webhook_body_and_hmac_signature(tmp_path, http_recorder, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    n, _ = notifier(tmp_path, type="webhook", url=f"{http_recorder.url}/hook", secret_env="HOOK_SECRET")
    one = event()
    await n.send(Message([one]))
    await n.send(Message([event(cell="A2", n=1), event(cell="A3", n=2)]))
    first, grouped = http_recorder.requests
    assert json.loads(first.body) == one
    assert [a["cell"] for a in json.loads(grouped.body)["alerts"]] == ["A2", "A3"]
    for req in (first, grouped):
        want = "sha256=" + hmac.new(b"s3cret", req.body, hashlib.sha256).hexdigest()
        assert req.headers["X-Shortwatch-Signature"] == want
        assert req.headers["Content-Type"] == "application/json"
    plain, _ = notifier(tmp_path, type="webhook", url=f"{http_recorder.url}/hook")
    await plain.send(Message([one]))
    assert "X-Shortwatch-Signature" not in http_recorder.requests[-1].headers
    await n.aclose()
    await plain.aclose()


async def test_mqtt_alert_topics_and_retained_status(tmp_path, mosquitto):
    n, _ = notifier(tmp_path, type="mqtt", host="127.0.0.1", port=mosquitto.port, prefix="sw")
    got: list[tuple[str, dict, bool]] = []
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="observer") as obs:
        await obs.subscribe("sw/alerts/#", qos=1)

        async def collect() -> None:
            async for m in obs.messages:
                got.append((str(m.topic), json.loads(m.payload), m.retain))

        task = asyncio.create_task(collect())
        await n.send(Message([event(severity="warning")]))
        await n.send(Message([event(cell=None, detector="source_down", n=1)]))
        for _ in range(100):
            if len(got) >= 2:
                break
            await asyncio.sleep(0.05)
        task.cancel()
    assert [t for t, _, _ in got] == ["sw/alerts/A1/overpotential_drop", "sw/alerts/_station/source_down"]
    assert got[0][1]["id"] == event()["id"]
    await n.send(Message([event(severity="critical", n=2), event(detector="hard_short", severity="critical", n=3)]))
    # a subscriber that comes later gets the retained status
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="late") as late:
        await late.subscribe("sw/status/#", qos=1)
        status: dict[str, dict] = {}
        async with asyncio.timeout(5):
            async for m in late.messages:
                assert m.retain
                status[str(m.topic)] = json.loads(m.payload)
                if len(status) == 2:
                    break
    assert status["sw/status/A1"]["status"] == "critical"
    assert status["sw/status/A1"]["firing"] == {"hard_short": "critical", "overpotential_drop": "critical"}
    assert status["sw/status/_station"]["cell"] is None
    # the status survives a restart of the notifier (kept under state_dir)
    again, _ = notifier(tmp_path, type="mqtt", host="127.0.0.1", port=mosquitto.port, prefix="sw")
    await again.send(Message([event(detector="hard_short", severity="critical", state="resolved", n=4)]))
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="late2") as late:
        await late.subscribe("sw/status/A1", qos=1)
        async with asyncio.timeout(5):
            async for m in late.messages:
                assert json.loads(m.payload)["firing"] == {"overpotential_drop": "critical"}
                break


async def test_mqtt_broker_down_raises(tmp_path):
    n, _ = notifier(tmp_path, type="mqtt", host="127.0.0.1", port=alert_servers.free_port(), timeout_s=2)
    with pytest.raises(aiomqtt.MqttError):
        await n.send(Message([event()]))


async def test_alertmanager_sees_the_alert_then_its_resolution(tmp_path, alertmanager):
    n, _ = notifier(tmp_path, type="alertmanager", url=alertmanager.url)
    await n.send(Message([event(severity="warning")]))
    await n.send(Message([event(severity="critical", n=1)]))  # escalation: the warning ends
    (a,) = alertmanager.alerts()
    assert a["labels"] == {
        "alertname": "overpotential_drop",
        "cell": "A1",
        "detector": "overpotential_drop",
        "severity": "critical",
        "station": STATION,
        "kind": "cell",
    }
    assert a["status"]["state"] == "active"
    assert a["annotations"]["summary"].startswith("Overpotential fell")
    await n.send(Message([event(severity="critical", state="resolved", n=2)]))
    assert alertmanager.alerts() == []
    await n.aclose()


async def test_console_logs_one_line_per_transition(caplog):
    with caplog.at_level(logging.WARNING, logger="shortwatch.alerts"):
        await Console().send(Message([event(severity="critical"), event(cell="A2", state="resolved", n=1)]))
    lines = [r for r in caplog.records if r.name == "shortwatch.alerts"]
    assert [r.levelno for r in lines] == [logging.ERROR, logging.WARNING]
    assert "CRITICAL firing A1 overpotential_drop" in lines[0].getMessage()
    assert "resolved A2" in lines[1].getMessage()


def test_routing_by_severity_cells_detectors_kinds(tmp_path):
    _, cfg = notifier(
        tmp_path,
        type="webhook",
        url="http://x/",
        min_severity="critical",
        cells=["A*", "_station"],
        detectors=["hard_*", "source_down"],
        kinds=["cell", "data"],
    )
    assert routes(cfg, event(detector="hard_short", severity="critical"))
    assert not routes(cfg, event(detector="hard_short", severity="warning"))
    assert not routes(cfg, event(cell="B1", detector="hard_short", severity="critical"))
    assert not routes(cfg, event(detector="overpotential_drop", severity="critical"))
    assert routes(cfg, event(cell=None, detector="source_down", severity="critical"))
    _, only_cell = notifier(tmp_path, type="webhook", url="http://x/", min_severity="info", kinds=["cell"])
    assert not routes(only_cell, event(cell=None, detector="source_down"))
    assert routes(only_cell, event(severity="info"))


def test_dead_letters_are_json_lines(tmp_path):
    d = DeadLetters(tmp_path, "lab email")
    d.add([event(), event(n=1)], "HTTP 400: invalid_payload")
    rows = d.read()
    assert d.path == tmp_path / "dead-letter" / "lab_email.jsonl"
    assert [r["event"]["id"] for r in rows] == [event()["id"], event(n=1)["id"]]
    assert rows[0]["reason"] == "HTTP 400: invalid_payload"


def test_alerts_test_command_reports_each_answer(tmp_path, smtp_server, mosquitto, capsys):
    from shortwatch.cli import main

    cfg = tmp_path / "lab.toml"
    cfg.write_text(
        f"""
[daemon]
station = "{STATION}"
state_dir = "{tmp_path / "state"}"
[[alerts.notifiers]]
type = "email"
name = "lab-email"
host = "127.0.0.1"
port = {smtp_server.port}
security = "none"
sender = "shortwatch@lab.example"
to = ["cells@lab.example"]
[[alerts.notifiers]]
type = "mqtt"
port = {mosquitto.port}
[[alerts.notifiers]]
type = "webhook"
url = "http://127.0.0.1:{alert_servers.free_port()}/nobody-listens"
timeout_s = 3
"""
    )
    assert main(["alerts", "test", "--config", str(cfg)]) == 1  # the webhook has no server
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["lab-email", "OK"] and "accepted" in out[0]
    assert out[1].split()[:2] == ["mqtt", "OK"]
    assert out[2].split()[:2] == ["webhook", "FAILED"] and "Cannot connect" in out[2]
    (m,) = smtp_server.messages
    assert m["Subject"].startswith("[TEST] WARNING firing")
    assert "test alert" in m.get_body(("plain",)).get_content()
    (att,) = list(m.iter_attachments())
    assert imread(io.BytesIO(att.get_content()), format="png").shape[:2] == (650, 1000)
    assert main(["alerts", "test", "--config", str(cfg), "--notifier", "lab-email"]) == 0
    assert len(smtp_server.messages) == 2
    assert main(["alerts", "test", "--config", str(cfg), "--notifier", "nope"]) == 2


async def test_mqtt_command_topic_sets_silences(tmp_path, mosquitto):
    from shortwatch.alerts.silences import Silences

    n, _ = notifier(tmp_path, type="mqtt", host="127.0.0.1", port=mosquitto.port, prefix="sw")
    silences = Silences(tmp_path)
    task = asyncio.create_task(n.listen(silences))
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="operator") as op:
            await op.subscribe("sw/command/result", qos=1)
            await asyncio.sleep(0.5)  # the listener subscribes
            cmds = [
                {"action": "silence", "cell": "A1", "for": "1h", "by": "robot"},
                {"action": "ack", "detector": "hard_short"},
                {"action": "reboot"},
            ]
            for c in cmds:
                await op.publish("sw/command", json.dumps(c), qos=1)
            await op.publish("sw/command", b"\xff not json", qos=1)
            results = []
            async with asyncio.timeout(10):
                async for m in op.messages:
                    results.append(json.loads(m.payload))
                    if len(results) == 4:
                        break
    finally:
        task.cancel()
    assert [r["ok"] for r in results] == [True, True, False, False]
    assert "action must be" in results[2]["error"]
    kinds = sorted((s.kind, s.cell, s.detector) for s in silences.active())
    assert kinds == [("ack", "*", "hard_short"), ("silence", "A1", "*")]


def test_silence_and_ack_commands(tmp_path, capsys):
    from shortwatch.alerts.silences import Silences
    from shortwatch.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n')
    assert main(["silence", "--config", str(cfg), "--cell", "B*", "--for", "30m", "--comment", "fixture swap"]) == 0
    sid = capsys.readouterr().out.split(":")[0]
    assert main(["ack", "--config", str(cfg), "--cell", "B2", "--detector", "hard_short"]) == 0
    active = Silences(tmp_path / "state").active()
    assert sorted(s.kind for s in active) == ["ack", "silence"]
    silence = next(s for s in active if s.kind == "silence")
    assert silence.cell == "B*" and 1790 < silence.until - silence.created <= 1800
    assert main(["silence", "--config", str(cfg)]) == 2  # neither cell nor detector: refused
    assert main(["silence", "--config", str(cfg), "--expire", sid]) == 0
    assert [s.kind for s in Silences(tmp_path / "state").active()] == ["ack"]
    assert main(["silence", "--config", str(cfg), "--expire", "nope"]) == 2


@pytest.mark.slow
def test_the_demo_mails_a_readable_email_with_its_plot_for_every_failing_cell(tmp_path, smtp_server, mosquitto):
    from shortwatch.cli import main

    cfg = tmp_path / "demo.toml"
    cfg.write_text(
        f"""
[daemon]
station = "demo"
state_dir = "{tmp_path / "state"}"
[[sources]]
type = "simulator"
seed = 7
speedup = 0
duration_h = 300
[sources.cells]
A1 = "sym_healthy"
A4 = "sym_soft_hard"
A5 = "sym_cv_rise"
B2 = "full_dpq_short"
B3 = "full_charge_fluct_short"
[[alerts.notifiers]]
type = "email"
host = "127.0.0.1"
port = {smtp_server.port}
security = "none"
sender = "shortwatch@lab.example"
to = ["cells@lab.example"]
[[alerts.notifiers]]
type = "mqtt"
port = {mosquitto.port}
prefix = "demo"
"""
    )
    assert main(["demo", "--config", str(cfg), "--seconds", "300", "--out", str(tmp_path / "report")]) == 0
    mailed: dict[str, list[str]] = {}
    for m in smtp_server.messages:
        text = m.get_body(("plain",)).get_content()
        html = m.get_body(("html",)).get_content()
        if "firing" in m["Subject"]:  # a resolve has nothing to do
            assert "What to do:" in text and "What to do:" in html
        for att in m.iter_attachments():
            cell = att.get_filename().split("-")[0]
            assert imread(io.BytesIO(att.get_content()), format="png").shape[:2] == (650, 1000)
            assert cell in text
            mailed.setdefault(cell, []).append(m["Subject"])
    assert sorted(mailed) == ["A4", "A5", "B2", "B3"]  # every failing cell, not the healthy one
    for cell in mailed:
        assert any(s.startswith("CRITICAL firing: hard_short") for s in mailed[cell])


def test_replay_sends_nothing_unless_notify(tmp_path, smtp_server):
    from shortwatch.cli import main

    data = tmp_path / "S1.csv"
    lines = ["time,cell,voltage_V,current_A,pressure_MPa"]
    for k in range(400):  # 0.4 mA half-cycles at 50 mV, then the voltage collapses: a hard short
        sign = 1 if (k // 60) % 2 == 0 else -1
        v = 0.05 * sign if k < 300 else 0.0001 * sign
        lines.append(f"{1_767_600_000 + 10 * k},S1,{v},{0.0004 * sign},5.0")
    data.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"
[[alerts.notifiers]]
type = "email"
host = "127.0.0.1"
port = {smtp_server.port}
security = "none"
sender = "s@lab.example"
to = ["c@lab.example"]
"""
    )
    out = tmp_path / "a.jsonl"
    assert main(["replay", "--config", str(cfg), "--alerts-out", str(out), "--no-progress", str(data)]) == 0
    assert "hard_short" in out.read_text() and smtp_server.messages == []
    data2 = tmp_path / "S2.csv"
    data2.write_text(data.read_text().replace(",S1,", ",S2,"))
    assert (
        main(["replay", "--config", str(cfg), "--notify", "--no-progress", "--alerts-out", str(out), str(data2)]) == 0
    )
    assert [m["Subject"] for m in smtp_server.messages] == ["CRITICAL firing: hard_short on S2"]
    assert main(["replay", "--config", str(cfg), "--notify", "--no-store", str(data2)]) == 2
