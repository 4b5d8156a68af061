"""`flatnet replay`: routing decisions audited against the log, past views, log checks, what-if.

Everything here reads a gateway's data directory and writes nothing to it.
"""
