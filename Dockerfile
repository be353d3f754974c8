# Build the ipwho binary, then run it on a slim image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin ipwho

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ipwho /usr/local/bin/ipwho
ENV IPWHO_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["ipwho"]
CMD ["serve"]
