"""One kafka-python group member in its own process, for the crash test: subscribes,
commits synchronously after every poll, and prints one JSON event per line in
group_support.MemberProcess's format. Closing stdin stops it cleanly (LeaveGroup).

usage: kp_member.py BOOTSTRAP TOPIC GROUP NAME SESSION_MS"""

import json
import sys
import threading

from kafka import ConsumerRebalanceListener, KafkaConsumer


def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class Announce(ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked):
        emit(ev="revoked", partitions=sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned):
        emit(ev="assigned", partitions=sorted(tp.partition for tp in assigned))


def main():
    bootstrap, topic, group, name, session_ms = sys.argv[1:6]
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id=f"kp-{name}",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=int(session_ms), heartbeat_interval_ms=500,
                             max_poll_records=20, fetch_max_wait_ms=100)
    consumer.subscribe([topic], listener=Announce())
    while not stop.is_set():
        batch = consumer.poll(timeout_ms=200)
        for msgs in batch.values():
            for m in msgs:
                emit(ev="record", p=m.partition, o=m.offset, v=m.value.decode())
        if batch:
            try:
                consumer.commit()
            except Exception as e:  # reported, the test decides
                emit(ev="error", error=repr(e))
    consumer.close()
    emit(ev="closed")


if __name__ == "__main__":
    main()
