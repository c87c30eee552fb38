import gc, tracemalloc
from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.conftest import new_database
from retention_pipelines_tests.test_engine.helpers import archiving, bulk_insert_pg, engine_for

def test_probe(postgres_server, policies, quiz_policy, tmp_path):
    policy = archiving(quiz_policy, batch_size=1000)
    for due in (10_000, 50_000, 100_000):
        database = AppDatabase(new_database(postgres_server))
        engine = engine_for(policy, policies, database, (tmp_path / str(due)).as_uri())
        bulk_insert_pg(database, 2010, "3 days"); engine.run("w")
        bulk_insert_pg(database, due, "2 days"); gc.collect()
        tracemalloc.start(10)
        found = engine.find(); archived = engine.archive(found)
        p1 = tracemalloc.get_traced_memory(); tracemalloc.reset_peak()
        snap1 = tracemalloc.take_snapshot()
        engine.act(found, archived, "m")
        p2 = tracemalloc.get_traced_memory()
        snap2 = tracemalloc.take_snapshot()
        tracemalloc.stop()
        print("DUE", due, "archive", p1, "act", p2)
        if due == 100_000:
            for s in snap2.compare_to(snap1, "traceback")[:3]:
                print(s); print("\n".join(s.traceback.format()[-12:]))
        database.dispose()
