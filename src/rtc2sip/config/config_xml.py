"""Reading webrtc2sip's ``config.xml`` (unchanged, so that rtc2sip is a drop-in replacement) into
:class:`~rtc2sip.config.webrtc2sip.RawEntry` values, in document order, for
:func:`rtc2sip.config.validate.parse_entries`.

As webrtc2sip's ``parseConfigNode`` (``mp_mediaproxy.cc``), element names are compared
case-insensitively and only text nodes count; unknown and empty elements are warned about (it is
another program's format), a malformed document is a :class:`~rtc2sip.config.webrtc2sip.ConfigError`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .webrtc2sip import XML_KEYS, ConfigError, RawEntry

__all__ = ["read_config_xml", "read_config_xml_text"]


def read_config_xml(path: Path) -> tuple[list[RawEntry], list[str]]:
    """Read a webrtc2sip config.xml; returns its entries in document order and warnings."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("config", f"cannot read {str(path)!r}: {exc.strerror or exc}", path) from exc
    return read_config_xml_text(data, source=path)


def read_config_xml_text(data: str | bytes, source: Path | None = None) -> tuple[list[RawEntry], list[str]]:
    """Like :func:`read_config_xml`, for a document already in memory."""
    where = str(source) if source is not None else "config.xml"
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, col = exc.position
        # ParseError's own text repeats the position; keep only expat's reason
        reason = str(exc).split(":", 1)[0]
        raise ConfigError(
            "config", f"malformed XML in {where} at line {line}, column {col + 1}: {reason}", source
        ) from exc
    except (LookupError, ValueError) as exc:
        # the XML declaration names an encoding Python does not know (LookupError) or expat cannot
        # read ("multi-byte encodings are not supported")
        raise ConfigError("config", f"malformed XML in {where}: {exc}", source) from exc

    base_dir = source.resolve().parent if source is not None else None
    entries: list[RawEntry] = []
    warnings: list[str] = []
    if root.tag.lower() != "config":
        warnings.append(f"{where}: root element is <{root.tag}>, expected <config>; reading it anyway")
    for elem in root:
        if not isinstance(elem.tag, str):  # comments and processing instructions
            continue
        name = elem.tag.lower()  # webrtc2sip compares element names case-insensitively
        if name not in XML_KEYS:
            warnings.append(f"{where}: unknown element <{elem.tag}> ignored")
            continue
        if len(elem):
            raise ConfigError(name, "unexpected child elements", source)
        text = (elem.text or "").strip()
        if not text:
            # webrtc2sip only acts on text nodes, so an empty element changed nothing there either
            warnings.append(f"{where}: <{elem.tag}> is empty, ignored")
            continue
        entries.append(RawEntry(name, text, name, base_dir))
    return entries, warnings
