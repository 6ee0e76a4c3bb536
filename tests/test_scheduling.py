"The suite's own scheduling: the tests that share an expensive fixture run on one pytest-xdist worker."
import pytest


def test_tests_of_a_shared_tree_are_scheduled_as_one_group(request):
    "Without the group (pytest 9.2 drops it silently: pytest-xdist#1386) each worker trains the results tree again."
    if not getattr(request.config.option, 'loadgroup', False): pytest.skip('not run by pytest-xdist --dist loadgroup')
    shared = [item.nodeid for item in request.session.items if 'results' in item.fixturenames]
    bench = [item.nodeid for item in request.session.items if item.nodeid.startswith('tests/test_benchmark.py')]
    if not shared and not bench: pytest.skip('no test of a shared tree was collected')
    assert all(i.endswith('@results') for i in shared) and all(i.endswith('@benchmark') for i in bench), shared + bench
