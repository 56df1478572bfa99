# syntax=docker/dockerfile:1
# One image for all six services: `kiban serve <service>` is the command (the chart sets it).
#   docker build -t kiban:dev .
#   docker run --rm -e KIBAN_... kiban:dev serve intake

# --- build stage: uv resolves the locked workspace into a self-contained virtualenv ------------
FROM python:3.11-slim-bookworm AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/kiban
RUN pip install --no-cache-dir "uv==0.9.*"
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs ./libs
COPY cli ./cli
COPY services ./services
# Only the `kiban` command and what it needs at run time, installed as wheels (no editable links
# back to /src). `--package kiban-cli`, not `--all-packages`: that would also install the test
# harness (kiban-testing, and pytest with it). Third-party test suites go too, at every depth.
RUN uv sync --frozen --no-dev --package kiban-cli --no-editable \
 && find /opt/kiban -type d -name tests -prune -exec rm -rf {} +

# --- final stage: the interpreter, the virtualenv and nothing to build with ---------------------
FROM python:3.11-slim-bookworm AS runtime
RUN pip uninstall -y pip setuptools wheel 2>/dev/null; \
    groupadd --system --gid 10001 kiban \
 && useradd --system --uid 10001 --gid kiban --home-dir /nonexistent --no-create-home kiban
COPY --from=build /opt/kiban /opt/kiban
ENV PATH=/opt/kiban/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    KIBAN_STATE_DIR=/tmp/kiban
# The root filesystem can be read-only: the only writable path is /tmp (an emptyDir in the chart).
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["kiban"]
CMD ["--help"]
