# Multi-stage build: a static binary on a minimal base, run as non-root.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/mailfwd ./cmd/mailfwd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mailfwd /usr/local/bin/mailfwd
VOLUME ["/var/spool/mailfwd"]
EXPOSE 25
USER nonroot
ENTRYPOINT ["/usr/local/bin/mailfwd"]
CMD ["serve", "-config", "/etc/mailfwd/mailfwd.yaml"]
