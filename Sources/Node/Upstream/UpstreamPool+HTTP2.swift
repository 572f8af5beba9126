import NIOCore

/// `--upstream-http2` in a loop's pool: which workers speak it, their multiplexed connections,
/// and the calls waiting for one being opened (the state is on `UpstreamPool`, the logic here).
extension UpstreamPool {
    /// Marks `url` as speaking HTTP/2 on this loop, or not any more (its connections then drain).
    func setHTTP2(_ url: WorkerURL, _ on: Bool) {
        loop.preconditionInEventLoop()
        if on { http2Workers.insert(url); return }
        http2Workers.remove(url)
        for c in http2.removeValue(forKey: url) ?? [] { c.drain() }
    }

    /// Asks `url` for HTTP/2 (h2c by prior knowledge, or ALPN over TLS): true, and the
    /// connection stays in this loop's pool, when its SETTINGS came back; false when the worker
    /// does not speak it; an error when it could not be reached at all.
    func negotiateHTTP2(_ url: WorkerURL, _ done: @escaping (Result<Bool, any Error>) -> Void) {
        loop.preconditionInEventLoop()
        openHTTP2(url) { [self] result in
            switch result {
            case .success(let c):
                http2Workers.insert(url)
                keep(c)
                done(.success(true))
            case .failure(HTTP2Connection.Refusal.notHTTP2):
                done(.success(false))
            case .failure(let error):
                done(.failure(error))
            }
        }
    }

    /// A stream to `url` on a connection with room, or on a new connection; a worker that
    /// refuses HTTP/2 on the new connection is called over HTTP/1.1 from then on.
    func acquireStream(_ url: WorkerURL, _ done: @escaping (Result<PooledConnection, any Error>) -> Void) {
        if let c = http2[url]?.first(where: \.usable) { return c.openStream(reused: true, done) }
        if opening[url] != nil { opening[url]!.append(done); return }
        opening[url] = [done]
        openHTTP2(url) { [self] result in
            let waiting = opening.removeValue(forKey: url) ?? []
            switch result {
            case .success(let c):
                keep(c)
                // Those past its stream limit open the next connection.
                for w in waiting { if c.usable { c.openStream(reused: false, w) } else { acquire(url, w) } }
            case .failure(HTTP2Connection.Refusal.notHTTP2):
                setHTTP2(url, false)
                http2Refused?(url)
                for w in waiting { acquire(url, w) }
            case .failure(let error):
                for w in waiting { w(.failure(error)) }
            }
        }
    }

    private func openHTTP2(_ url: WorkerURL, _ done: @escaping (Result<HTTP2Connection, any Error>) -> Void) {
        metrics.upstreamConnectionOpened()
        let ready = loop.makePromise(of: HTTP2Connection.self)
        if let connector {
            connector(url, loop).assumeIsolated().whenComplete { result in
                do { try HTTP2Connection.configure(try result.get(), url: url, timeout: self.connectTimeout, ready: ready) } catch { ready.fail(error) }
            }
        } else {
            connect(url, speaking: .http2(ready)) { result in
                if case .failure(let error) = result { ready.fail(error) }
            }
        }
        ready.futureResult.assumeIsolated().whenComplete(done)
    }

    /// Puts a ready HTTP/2 connection in the pool; it leaves when it closes, and is closed when
    /// idle past the timeout.
    private func keep(_ c: HTTP2Connection) {
        let url = c.url, id = ObjectIdentifier(c)
        http2[url, default: []].append(c)
        c.channel.closeFuture.assumeIsolated().whenComplete { [self] _ in
            http2[url]?.removeAll { ObjectIdentifier($0) == id }
            if http2[url]?.isEmpty == true { http2[url] = nil }
        }
        c.onIdle = { [unowned self] in
            if let limit = idleTimeoutNs, sweep == nil { scheduleSweep(in: limit) }
        }
        c.onIdle?()
    }
}
