# ptcheck in a container: the build runs scripts/setup (the same install CI runs through .ci/run),
# the default command runs the conformance check of every architecture.
#   docker build -t ptcheck .
#   docker run --rm ptcheck                          # ptcheck check --arch all
#   docker run --rm ptcheck pytest --arch aarch64    # the tests of one architecture
FROM debian:trixie-slim
WORKDIR /ptcheck
COPY . .
ENV PTCHECK_VENV=/opt/ptcheck PTCHECK_CACHE=/opt/ptcheck/guest-cache
RUN bash scripts/setup && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/ptcheck/bin:$PATH
CMD ["ptcheck", "check", "--arch", "all"]
