"""Sends one info command to every node of the cluster, like `asinfo -v CMD`, with
Aerospike's Python client. Usage: asinfo.py HOSTS CMD. Prints one answer per line."""
import sys

import aerospike


def host(spec):
    name, _, port = spec.strip().partition(":")
    return (name, int(port or 3000))


client = aerospike.client({"hosts": [host(h) for h in sys.argv[1].split(",")]}).connect()
for node, (error, answer) in sorted(client.info_all(sys.argv[2]).items()):
    if error:
        sys.exit(f"{node}: {error}")
    print(answer.strip().split("\t")[-1])
client.close()
