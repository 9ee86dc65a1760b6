"""HAProxy's ``show stat`` as raylm's drain reads it (raylm/serve/front_door.py): the requests in flight are the
queued and current sessions of the backends; frontends and servers are not counted twice."""

from raylm.serve.front_door import in_flight_of

# The first columns of HAProxy's CSV (`show stat`), in its order; the rest are cut here.
SHOW_STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot
prometheus,FRONTEND,,,1,2,2000,9
http_frontend,FRONTEND,,,12,20,2000,400
raylm,replica_0x4hn6ns,0,0,5,8,,390
raylm,BACKEND,2,3,5,8,200,390
default_backend,BACKEND,0,0,1,1,200,4
stats,BACKEND,0,0,0,0,200,0

"""


def test_in_flight_counts_queued_and_current_backend_sessions_only():
    assert in_flight_of(SHOW_STAT) == 2 + 5 + 1  # raylm's queue and sessions, one 404 being answered


def test_an_idle_haproxy_has_nothing_in_flight():
    idle = SHOW_STAT.replace("raylm,BACKEND,2,3,5", "raylm,BACKEND,0,3,0").replace("default_backend,BACKEND,0,0,1",
                                                                                 "default_backend,BACKEND,0,0,0")
    assert in_flight_of(idle) == 0
    assert in_flight_of("") == 0
