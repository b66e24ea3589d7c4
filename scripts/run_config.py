"""The resolved job of a run as h2tune stores it in metrics.h5 (`/config`, INI text), as a flat
{"section.key": "value"} dict. Shared by the analysis scripts; needs only h5py's file object."""


def parse_config(text):
    out, section = {}, ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line:
            k, v = line.split("=", 1)
            out[f"{section}.{k.strip()}"] = v.strip()
    return out


def read_config(h5file):
    """{} when the file has no /config (files written before it was recorded)."""
    if "config" not in h5file:
        return {}
    raw = h5file["config"][()]
    return parse_config(raw.decode() if isinstance(raw, bytes) else str(raw))
