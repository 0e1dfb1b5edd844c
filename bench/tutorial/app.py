# The tutorial's Flask app ("Orchestrating Docker containers and Aerospike Clusters"),
# as printed, with the smallest fix that lets it run with today's `aerospike` client:
# one client, built at start-up. As printed, `client` was only assigned when a
# freshly built client reported itself disconnected, which today's client never
# does, so every page was the "Hummm" error. Used by scripts/bench as the baseline,
# which may run Aerospike on another port than the tutorial's 3000: AEROSPIKE_PORT.
from flask import Flask, request
import aerospike
import os
import datetime
import time
import socket
import uuid

app = Flask(__name__)

config = {
  'hosts': [ (os.environ.get('AEROSPIKE_HOST', 'prod_aerospike_1'), int(os.environ.get('AEROSPIKE_PORT', 3000))) ],
  'policies': { 'key': aerospike.POLICY_KEY_SEND }
}

host = socket.gethostbyname(socket.gethostname())

# The fix: one client for the process (was: a new client per request).
client = aerospike.client(config).connect()

@app.route('/')
def hello():

    try:

        id = str(uuid.uuid1());

        # Insert the 'hit' record
        ts =  int(round(time.time() * 1000))
        client.put(("test", "hits", id), {"server": host, "ts": ts} )

        # Maintain our summaries for the grand total and for each server
        client.increment(("test", "summary", "total_hits"), "total", 1)

        client.increment(("test", "summary", host), "total", 1)
        
        (key, meta, bins) = client.get(("test","summary","total_hits"))
        
        # Return the updated web page
        return "Hello World! I have been seen by %s." % bins["total"]

    except Exception as e:
        return "Hummm - %s looks like we have an issue, let me try again" % "err: {0}".format(e)

if __name__ == "__main__":
    app.run(host="0.0.0.0", debug=True)
