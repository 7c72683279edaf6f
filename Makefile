# The two commands a newcomer needs (see README.md):
#   make run    install what is missing, build, start the app
#   make test   install what is missing, then format, lint and test everything
CARGO ?= cargo

.PHONY: run test bench deps-run deps-test fmt lint unit

run: deps-run
	@printf '\033[1m==> Building Vireo (release)\033[0m\n'
	$(CARGO) build --release --bins
	@build-aux/define-demo
	@printf '\033[1m==> Starting the app with the Demo VM console\033[0m\n'
	./target/release/vireo --show-domain-console Demo

test: deps-test fmt lint unit

deps-run:
	@build-aux/install-deps run

deps-test:
	@build-aux/install-deps test

fmt:
	@printf '\033[1m==> rustfmt\033[0m\n'
	$(CARGO) fmt --all --check

lint:
	@printf '\033[1m==> clippy (warnings are errors)\033[0m\n'
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	@printf '\033[1m==> Tests\033[0m\n'
	$(CARGO) build --workspace --bins --locked
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(CARGO) test --workspace --locked

# Benchmarks print ratios against QEMU run in the same benchmark; they are
# not part of `make test`.
bench: deps-test
	$(CARGO) build --release -p vireo-vmm --bins --locked
	$(CARGO) bench -p vireo-vmm --bench vmm_vs_qemu --locked
	$(CARGO) bench -p vireo-vmm --bench vnc_vs_qemu --locked
	$(CARGO) bench -p vireo-storage --bench storage_vs_qemu_img --locked
	$(CARGO) bench -p vireo-storage --bench vmdk_import_vs_qemu_img --locked
	$(CARGO) build --release -p vireod -p vireoctl --bins --locked
	$(CARGO) bench -p vireod --bench list_vs_virsh --locked
	$(CARGO) bench -p vireo-remote --bench ssh_vs_local --locked
	$(CARGO) bench -p vireod --bench volumes_vs_libvirt --locked
	$(CARGO) build --release -p vireo --bins --locked
	$(CARGO) bench -p vireo --bench app_bench --locked
