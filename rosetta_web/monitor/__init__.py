"""The WAL monitor: samples every source's WAL and replication slots on a schedule, through
postgres/, and stores the rounds."""
