"""What `aql> select * from test.hits` and `select * from test.summary` show, read
with Aerospike's own Python client (PyPI `aerospike`), independently of the gateway.

Usage: aerospike_view.py HOSTS NAMESPACE SERVER[,SERVER...]
Prints JSON: {"summary": {key: bins}, "hits": {key: bins}, "key_types": [...]}; only
the rows of `total_hits` and the given servers (other tests' rows may hold anything),
and the Python types of every summary key. Keys are those stored with the records (scans return no key otherwise).
"""
import json
import sys

import aerospike


def host(spec):
    name, _, port = spec.strip().partition(":")
    return (name, int(port or 3000))


hosts, namespace, servers = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))
client = aerospike.client({"hosts": [host(h) for h in hosts.split(",")]}).connect()


def scan(set_name):
    return [(key[2], bins) for (key, _meta, bins) in client.query(namespace, set_name).results()]


summary = scan("summary")
view = {
    "summary": {str(key): bins for key, bins in summary if key == "total_hits" or key in servers},
    "hits": {str(key): bins for key, bins in scan("hits") if bins.get("server") in servers},
    "key_types": sorted({type(key).__name__ for key, _ in summary}),
}
json.dump(view, sys.stdout)
client.close()
