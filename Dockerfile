# ciwebhook: one static binary on a distroless base, run as a non-root user.
#
#   docker build -t ciwebhook .
#   docker run -p 8080:8080 -e GITHUB_WEBHOOK_SECRET=... -v ciwebhook-data:/data ciwebhook
#
# cmd/ciwebhook's TestStaticBinary builds the binary with the same command
# and checks that it is static and starts; keep the two in step.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a change to the code alone reuses this layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# No cgo: the SQLite driver is pure Go, and a static binary needs no libc
# in the final image. -trimpath keeps build paths out of the binary.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ciwebhook ./cmd/ciwebhook
# The ledger's folder, owned by the nonroot user (65532) of the final image:
# a volume mounted at /data starts as a copy of it, writable by that user.
RUN mkdir -p /out/data && chown 65532:65532 /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ciwebhook /ciwebhook
COPY --from=build --chown=65532:65532 /out/data /data
USER nonroot:nonroot
# PORT is read at start (Cloud Run sets it); 8080 when unset.
EXPOSE 8080
ENV LEDGER_PATH=/data/ledger.db
VOLUME /data
ENTRYPOINT ["/ciwebhook"]
