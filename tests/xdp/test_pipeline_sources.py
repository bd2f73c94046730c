"""examples/pipeline.py --source xdp:IFACE / packet:IFACE (and --sink xdp:IFACE), on veth pairs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from turbomem.packet.xdp import attached_program

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline.py"

# UDP-in-IPv4 frames (forwarded by the pipeline's rule) and experimental-
# ethertype frames (filtered), from the far end.
_SEND = r"""
import socket, struct, sys, time
ifname, dst, src, count = sys.argv[1], bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
time.sleep(0.5)
for i in range(count):
    if i % 2:
        payload = struct.pack("!I", i) + bytes(40)
        u = struct.pack("!HHHH", 1000 + i % 7, 9000, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(u), i & 0xFFFF, 0, 64, 17, 0,
                         bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])) + u
        s.send(dst + src + b"\x08\x00" + ip)
    else:
        s.send(dst + src + b"\x88\xb5" + struct.pack("!II", i, 64) + bytes(42))
    if i % 64 == 63:
        time.sleep(0.001)
"""


def _start_pipeline(*args):
    """Start examples/pipeline.py and wait until its source is open."""
    p = subprocess.Popen([sys.executable, str(EXAMPLE), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    if not line.startswith("capturing on"):
        p.kill()
        raise AssertionError(f"pipeline did not start: {line}{p.stderr.read()}")
    return p


def _finish_pipeline(p):
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return json.loads(out)


@pytest.mark.parametrize("kind", ["xdp", "packet"])
def test_pipeline_live_source(lab, kind):
    count = 400
    pipe = _start_pipeline("--source", f"{kind}:{lab.near}", "--count", str(count), "--idle", "3",
                           "--json", "--pool-size", "4096")
    try:
        sender = lab.spawn([sys.executable, "-c", _SEND, lab.far, lab.near_mac.hex(),
                            lab.far_mac.hex(), str(count)])
        assert sender.wait(timeout=30) == 0
        res = _finish_pipeline(pipe)
    finally:
        pipe.kill()
    assert res["buffers_conserved"]
    assert res["stages"][0]["packets"] == count
    assert res["forwarded"] == count // 2
    assert res["filtered"] == count // 2
    assert attached_program(lab.near) is None


@pytest.mark.parametrize("source, sink", [("packet", "xdp"), ("xdp", "packet")])
def test_pipeline_sink_forwards_to_the_wire(lab, source, sink):
    """Receive on the near end, transmit the forwarded UDP packets back out of
    the near end: the far end must see every one of them."""
    count = 200
    listener = lab.spawn([sys.executable, "-c", _COUNT_UDP, lab.far, str(count // 2), "20"],
                         stdout=subprocess.PIPE, text=True)
    assert listener.stdout.readline().strip() == "ready"
    pipe = _start_pipeline("--source", f"{source}:{lab.near}", "--sink", f"{sink}:{lab.near}",
                           "--count", str(count), "--idle", "3", "--json", "--pool-size", "4096")
    try:
        sender = lab.spawn([sys.executable, "-c", _SEND, lab.far, lab.near_mac.hex(),
                            lab.far_mac.hex(), str(count)])
        assert sender.wait(timeout=30) == 0
        res = _finish_pipeline(pipe)
        out, _ = listener.communicate(timeout=30)
    finally:
        listener.kill()
        pipe.kill()
    assert res["buffers_conserved"] and res["forwarded"] == count // 2
    assert int(out.strip() or 0) == count // 2


_COUNT_UDP = r"""
import socket, sys, time
ifname, want, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: never drop while we are slow
s.bind((ifname, 0x0800))
s.settimeout(0.2)
print("ready", flush=True)
n = 0
end = time.time() + secs
while n < want and time.time() < end:
    try:
        data, addr = s.recvfrom(4096)
    except socket.timeout:
        continue
    if addr[2] != socket.PACKET_OUTGOING and data[23] == 17:
        n += 1
print(n)
"""
