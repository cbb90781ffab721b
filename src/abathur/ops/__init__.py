"""The operations kit (issue 5): what operators run after a deploy and from cron.

One module per concept:

- :mod:`~abathur.ops.files`: the database file before it is opened (path checks, migration
  plans, readability) and :func:`~abathur.ops.files.ops_kit`, the backend's machinery;
- :mod:`~abathur.ops.schema`: what a file holds, compared with what the migrations build;
- :mod:`~abathur.ops.integrity`: ``abathur check``, a list of small checks;
- :mod:`~abathur.ops.backup`: online backup, manifest, list, verify and retention;
- :mod:`~abathur.ops.restore`: verified restore with an atomic swap;
- :mod:`~abathur.ops.health`: ``abathur health``, ok / warn / fail with thresholds;
- :mod:`~abathur.ops.metrics`: ``abathur metrics``, Prometheus text exposition;
- :mod:`~abathur.ops.smoke`: ``abathur smoke``, the 35 post-deploy cases against a live
  database (it drives the public API, so it is the one module here that opens an
  :class:`~abathur.api.Abathur`, and it removes what it wrote when it ends).

These modules keep the orchestration: reports, thresholds, retention,
manifests, HMAC, temporary files, formats. What they ask of the storage
(snapshots for health and metrics, the online copy, the exclusive lock of a
restore, the SQL of the checks) is the backend's: the protocol is
:class:`abathur.stores.ops.OpsKit`, and the SQLite machinery lives in
:mod:`abathur.backends.sqlite` (``probes``, ``backup``, ``checks``, ``schema``,
``untrusted``, ``files``). On a PostgreSQL server (``--db postgresql://...``,
issue 14) every module here takes the :class:`~abathur.config.PostgresUrl`
where it takes a path, and asks :mod:`abathur.backends.postgres.ops` (loaded
on use: psycopg is an optional extra): snapshot probes with the server's own
numbers (:class:`~abathur.stores.ops.ServerStats`), the same checks by name,
``pg_dump``/``pg_restore`` backups with the same manifest, and restores that
verify in a scratch database and rename it over the target.

Everything here works on its own isolated connections, never on the pool of
an open :class:`~abathur.api.Abathur`, so it can run beside a live
application. The functions block: from async code, call them with
``asyncio.to_thread``.
"""
