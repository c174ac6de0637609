"""The `/status` document -> the status page's HTML. Pure functions of the document.

Everything that comes from outside the code (device ids and names, values, error texts, the
names unknown BLE advertisers give themselves) goes through `esc`: a device that sends
`<script>` shows it as text. The page is complete without JavaScript (the first view is
rendered here); its script only replaces `<main>` with `render_main` of a fresher document.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.limits import REFRESH_WITHOUT_JS

SPARK_WIDTH = 120
SPARK_HEIGHT = 24

#: A link's state in the words of the page (the JSON keeps the supervisor's).
STATE_WORDS = {
    "up": "up",
    "starting": "connecting",
    "backing_off": "down",
    "failed": "failed",
    "stopped": "stopped",
}


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def ago(seconds: float | None) -> str:
    """`12 s ago`, `3 min ago`, `2 h ago`, `never`."""
    if seconds is None:
        return "never"
    return f"{duration(seconds)} ago"


def duration(seconds: float) -> str:
    """`0.4 s`, `12 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`."""
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f} s" if s < 1 else f"{s:.0f} s"
    if s < 60:
        return f"{s:.0f} s"
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "min", 60)):
        if s >= size:
            return f"{int(s // size)} {unit} {int(s % size // subsize)} {sub}"
    return f"{int(s // 60)} min {int(s % 60)} s"


def value_text(value: object, unit: str | None) -> str:
    """A sensor value as the page shows it (not escaped yet)."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    return f"{text} {unit}" if unit else text


def sparkline(points: Sequence[Sequence[float]]) -> str:
    """An inline SVG polyline of `[ts, value]` points (oldest first) scaled into the box: time
    across, value up; a flat line in the middle when the value did not change. Fewer than two
    points draw nothing."""
    finite = [(float(t), float(v)) for t, v in points if math.isfinite(v) and math.isfinite(t)]
    if len(finite) < 2:
        return ""
    t0, t1 = finite[0][0], finite[-1][0]
    low, high = min(v for _, v in finite), max(v for _, v in finite)
    span_t, span_v = (t1 - t0) or 1.0, high - low
    inner = SPARK_HEIGHT - 2  # one pixel of margin above and below: the stroke stays inside

    def xy(t: float, v: float) -> str:
        x = (t - t0) / span_t * SPARK_WIDTH
        y = 1 + (inner / 2 if span_v == 0 else (high - v) / span_v * inner)
        return f"{x:.1f},{y:.1f}"

    path = " ".join(xy(t, v) for t, v in finite)
    label = f"from {low:.6g} to {high:.6g} over {duration(t1 - t0)}"
    return (
        f'<svg class="spark" viewBox="0 0 {SPARK_WIDTH} {SPARK_HEIGHT}" width="{SPARK_WIDTH}" '
        f'height="{SPARK_HEIGHT}" role="img" aria-label="{esc(label)}">'
        f'<polyline points="{path}" fill="none" stroke="currentColor" stroke-width="1.5"/>'
        "</svg>"
    )


def render_page(doc: Mapping[str, Any]) -> str:
    """The whole page: head, the rendered document, the script that keeps it fresh."""
    gw = doc["gateway"]
    title = f"{gw['id']} · iot-gateway"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<noscript><meta http-equiv="refresh" content="{REFRESH_WITHOUT_JS}"></noscript>'
        f"<title>{esc(title)}</title>"
        '<link rel="stylesheet" href="static/page.css">'
        '<script src="static/page.js" defer></script>'
        "</head><body>"
        f'<main id="live">{render_main(doc)}</main>'
        '<footer><span id="refresh">updated every 2 s</span> · '
        '<a href="status">status as JSON</a> · <a href="metrics">metrics</a></footer>'
        "</body></html>\n"
    )


def render_main(doc: Mapping[str, Any]) -> str:
    """What the script refreshes: the gateway, the devices, Bluetooth."""
    return _gateway_section(doc) + _devices_section(doc) + _ble_section(doc.get("ble"))


def _gateway_section(doc: Mapping[str, Any]) -> str:
    gw, mqtt, outbox = doc["gateway"], doc["mqtt"], doc["outbox"]
    since = "" if mqtt.get("since") is None else f" for {duration(gw['time'] - mqtt['since'])}"
    if mqtt["connected"]:
        broker = f'<span class="ok" id="broker-state">connected</span>{since}'
    else:
        why = mqtt.get("reason")
        reason = f': <span class="reason">{esc(why)}</span>' if why else ""
        broker = f'<span class="bad" id="broker-state">disconnected</span>{since}{reason}'
    mode = esc(outbox["mode"])
    if outbox.get("mode_reason"):
        mode += f" ({esc(outbox['mode_reason'])})"
    lag = doc.get("loop_lag")
    ready = (
        '<span class="ok">ready</span>' if doc["ready"] else '<span class="bad">not ready</span>'
    )
    rows = [
        ("gateway", f"<strong>{esc(gw['id'])}</strong> · version {esc(gw['version'])}"),
        ("uptime", duration(gw.get("uptime", 0.0))),
        ("broker", f"{esc(mqtt['host'])}:{esc(mqtt['port'])} · {broker}"),
        ("reconnects", esc(mqtt.get("reconnects", 0))),
        ("outbox", _outbox_text(outbox, mode)),
        ("loop lag", "n/a" if lag is None else f"{lag * 1000:.1f} ms"),
        ("readiness", ready + "".join(f" · {esc(r)}" for r in doc["not_ready"])),
    ]
    cells = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return f'<section id="gateway"><h1>{esc(gw["id"])}</h1><dl class="facts">{cells}</dl></section>'


def _outbox_text(outbox: Mapping[str, Any], mode: str) -> str:
    depth = f"{esc(outbox['records'])} queued"
    if outbox["records"]:
        depth += f", oldest {duration(outbox['oldest_age'])}"
    return f'<span id="outbox-depth">{depth}</span> · {mode} mode'


DEVICE_COLUMNS = ("device", "link", "last reading", "values", "errors", "availability")


def _devices_section(doc: Mapping[str, Any]) -> str:
    devices: Mapping[str, Any] = doc["devices"]
    if not devices:
        empty = '<p class="empty">No devices configured.</p>'
        return f'<section id="devices"><h2>Devices</h2>{empty}</section>'
    head = "".join(f"<th>{c}</th>" for c in DEVICE_COLUMNS)
    rows = "".join(_device_row(i, d) for i, d in devices.items())
    return (
        '<section id="devices"><h2>Devices</h2>'
        f'<table class="devices"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
        "</section>"
    )


def _device_row(device_id: str, d: Mapping[str, Any]) -> str:
    state = d["state"]
    name = f'<div class="name">{esc(d["name"])}</div>' if d.get("name") else ""
    link = f'<span class="state">{esc(STATE_WORDS.get(state, state))}</span>'
    if d.get("reason") and state != "up":
        link += f'<div class="reason">{esc(d["reason"])}</div>'
    if d.get("retry_in") is not None:
        link += f'<div class="retry">retry in {duration(d["retry_in"])}</div>'
    errors = [f"decode {d['decode_errors']['total']}", f"filtered {d['filter_dropped']['total']}"]
    family = f'<div class="family">{esc(d["family"])}</div>'
    cells = [
        f'<code class="id">{esc(device_id)}</code>{name}{family}',
        link,
        esc(ago(d.get("last_seen_age"))),
        _values(d.get("sensors", {})) + _controls(d.get("controls", {})),
        " · ".join(errors),
        esc(d.get("availability", "offline")),
    ]
    tds = "".join(
        f'<td data-label="{label}">{cell}</td>'
        for label, cell in zip(DEVICE_COLUMNS, cells, strict=True)
    )
    state = esc(state)
    return f'<tr id="device-{esc(device_id)}" class="state-{state}" data-state="{state}">{tds}</tr>'


def _values(sensors: Mapping[str, Any]) -> str:
    if not sensors:
        return '<span class="empty">none yet</span>'
    items = "".join(
        f'<li><span class="sensor">{esc(name)}</span> '
        f'<span class="value">{esc(value_text(s["value"], s.get("unit")))}</span>'
        f"{sparkline(s.get('history', []))}</li>"
        for name, s in sensors.items()
    )
    return f'<ul class="values">{items}</ul>'


def _controls(controls: Mapping[str, Any]) -> str:
    """Each control and its last state (what the device said; `optimistic`: what was sent is
    all Home Assistant knows)."""
    if not controls:
        return ""
    items = "".join(
        f'<li><span class="sensor">{esc(name)}</span> <span class="platform">'
        f"{esc(c['platform'])}</span> "
        f'<span class="value">{esc(_control_state(c))}</span></li>'
        for name, c in controls.items()
    )
    return f'<ul class="controls">{items}</ul>'


def _control_state(control: Mapping[str, Any]) -> str:
    if control.get("state") is not None:
        return str(control["state"])
    if control.get("platform") == "button":
        return ""
    return "optimistic" if control.get("optimistic") else "—"


def _ble_section(ble: Mapping[str, Any] | None) -> str:
    if ble is None:
        return ""
    adapters = "".join(
        f'<tr><td data-label="adapter"><code>{esc(name)}</code></td>'
        f'<td data-label="scanner">{esc(STATE_WORDS.get(a["state"], a["state"]))}'
        f"{_reason(a)}</td>"
        f'<td data-label="mode">{esc(a["mode"] or "-")}</td>'
        f'<td data-label="adverts/s">{a["adverts_per_second"]:.1f}</td>'
        f'<td data-label="ladder">{esc(a["ladder"])}</td></tr>'
        for name, a in ble["adapters"].items()
    )
    scanners = (
        '<table class="scanners"><thead><tr><th>adapter</th><th>scanner</th><th>mode</th>'
        f"<th>adverts/s</th><th>ladder</th></tr></thead><tbody>{adapters}</tbody></table>"
    )
    return (
        f'<section id="ble"><h2>Bluetooth LE</h2>{scanners}'
        f"<h3>Heard, not configured</h3>{_strangers(ble['unknown'])}</section>"
    )


def _reason(item: Mapping[str, Any]) -> str:
    if item.get("reason") and item.get("state") != "up":
        return f'<div class="reason">{esc(item["reason"])}</div>'
    return ""


def _strangers(unknown: Sequence[Mapping[str, Any]]) -> str:
    if not unknown:
        return '<p class="empty">No other advertisers heard.</p>'
    rows = []
    for u in unknown:
        rssi = "" if u.get("rssi") is None else f" · {esc(u['rssi'])} dBm"
        snippet = f'<pre class="snippet">{esc(u["snippet"])}</pre>' if u.get("snippet") else ""
        rows.append(
            f'<tr><td data-label="address"><code>{esc(u["address"])}</code>'
            f'<div class="name">{esc(u.get("name") or "")}</div></td>'
            f'<td data-label="heard">{esc(ago(u["last_seen_age"]))}{rssi}</td>'
            f'<td data-label="decoder">{esc(u.get("decoder") or "-")}</td>'
            f'<td data-label="reads">{esc(u.get("values") or "")}{snippet}</td></tr>'
        )
    return (
        '<table class="strangers"><thead><tr><th>address</th><th>heard</th><th>decoder</th>'
        f"<th>reads</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
