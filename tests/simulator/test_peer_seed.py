"""The seed design peer's wire format and the /proc lookup of which worker holds a socket."""

from __future__ import annotations

import orjson

from simulator.accounting import Receipt
from simulator.peer_seed import (
    DELIVERY_ACTION,
    assign_workers,
    parse_delivery,
    parse_proc_net_tcp,
    parse_socket_link,
    proctor_url,
    student_frame,
    student_url,
)


def test_student_frame_is_what_the_peer_parses_and_its_data_comes_back_to_the_proctor() -> None:
    frame = student_frame(
        "exam-1", "a000007", 3, 1_800_000_000_123_456, "progress", {"answered": 2}
    )
    data = orjson.loads(frame)["message"]["data"]
    assert data == {
        "quiz_id": "exam-1",
        "student": "a000007",
        "seq": 3,
        "ts_us": 1_800_000_000_123_456,
        "type": "progress",
        "answered": 2,
    }
    # What server.js sends every proctor of the quiz: the student's data unchanged.
    delivered = orjson.dumps({"action": DELIVERY_ACTION, "data": data}).decode()
    assert parse_delivery(delivered, 42) == Receipt("a000007", 3, 3, 42, 0)


def test_our_fields_win_over_extra_fields_of_the_same_name() -> None:
    frame = student_frame("q", "s", 1, 5, "status", {"seq": 99, "quiz_id": "x", "status": "away"})
    data = orjson.loads(frame)["message"]["data"]
    assert (data["seq"], data["quiz_id"], data["status"]) == (1, "q", "away")


def test_anything_but_a_delivery_is_not_a_receipt() -> None:
    assert parse_delivery('{"error":"bad json"}', 1) is None
    assert parse_delivery("not json", 1) is None
    assert parse_delivery("[1, 2]", 1) is None
    assert parse_delivery(f'{{"action":"{DELIVERY_ACTION}","data":7}}', 1) is None
    no_seq = f'{{"action":"{DELIVERY_ACTION}","data":{{"quiz_id":"q","student":"s"}}}}'
    assert parse_delivery(no_seq, 1) is None
    bool_seq = f'{{"action":"{DELIVERY_ACTION}","data":{{"student":"s","seq":true}}}}'
    assert parse_delivery(bool_seq, 1) is None
    assert parse_delivery(b'{"action":"other","data":{"student":"s","seq":1}}', 1) is None


def test_urls_carry_role_and_quiz() -> None:
    assert student_url("ws://127.0.0.1:9", "e1") == "ws://127.0.0.1:9/?role=student&quiz_id=e1"
    assert proctor_url("ws://127.0.0.1:9", "e1") == "ws://127.0.0.1:9/?role=proctor&quiz_id=e1"


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:71AC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1000 1
   1: 0100007F:71AC 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2001 1
   2: 0100007F:C350 0100007F:71AC 01 00000000:00000000 00:00000000 00000000     0        0 2002 1
   3: 0100007F:71AC 0100007F:C351 01 00000000:00000000 00:00000000 00000000     0        0 2003 1
   4: 0100007F:71AC 0100007F:C352 06 00000000:00000000 00:00000000 00000000     0        0 0 1
   5: 0100007F:1F90 0100007F:C353 01 00000000:00000000 00:00000000 00000000     0        0 2005 1
"""


def test_proc_net_tcp_gives_the_server_side_socket_of_each_established_client() -> None:
    # 0x71AC = 29100 (the peer's port); 0xC350 = 50000. Listening (0A), time-wait (06),
    # the client's own side of the connection and other servers' connections are left out.
    assert parse_proc_net_tcp(PROC_NET_TCP, 29100) == {50000: 2001, 50001: 2003}
    assert parse_proc_net_tcp(PROC_NET_TCP, 8080) == {50003: 2005}
    assert parse_proc_net_tcp("header only\n", 29100) == {}


def test_socket_links_and_worker_assignment() -> None:
    assert parse_socket_link("socket:[2001]") == 2001
    assert parse_socket_link("pipe:[2001]") is None
    assert parse_socket_link("/dev/null") is None
    clients = {50000: 2001, 50001: 2003, 50002: 9999}
    assert assign_workers(clients, [{2003, 5}, {2001}]) == {50000: 1, 50001: 0}
