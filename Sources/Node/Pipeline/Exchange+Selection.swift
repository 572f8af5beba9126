import NIOCore
import Tracing
import Policies

/// Choosing the worker (or, in PD mode, the prefill and decode pair) for an attempt: admission
/// first, then sticky sessions from Redis when this router does not know the key, then the
/// registry's policies; the first decision is recorded in metrics, the mesh and Redis.
extension Exchange {
    func requestAdmission() {
        let me = NIOLoopBound(self, eventLoop: pool.loop)
        admissionTicket = state.admission.admit(on: pool.loop) { result in
            let exchange = me.value
            exchange.admissionTicket = nil
            let (answer, label): (Machine.AdmissionAnswer, String) = switch result {
            case .admitted: (.admitted, "admitted")
            case .queueFull: (.queueFull, "queue_full")
            case .timedOut: (.timedOut, "timed_out")
            }
            exchange.admissionEnded(label)
            exchange.perform(exchange.machine.admission(answer))
        }
        queuedForAdmission()
    }

    func selectWorker(avoiding: Set<String>, avoidingPrefill: Set<String>) {
        if let sessions = state.sessions, !sessionsLookedUp, let key = plan.routing.routingKey, !key.isEmpty {
            sessionsLookedUp = true
            // One assignment per policy that chooses for this request: in PD mode the prefill's
            // and the decode's. Only a key this router does not know costs a Redis read: the
            // local table (kept current by the mesh when on) is the fast path.
            let routingKey = ManualPolicy.normalize(key)
            let roles: [WorkerRole] = if case .prefillDecode = plan.kind { [.prefill, .decode] } else { [.regular] }
            let unknown = roles.map { state.registry.policyModel(plan.model, role: $0) }
                .filter { state.registry.sessionLastUse(model: $0, routingKey: routingKey) == nil }
            if !unknown.isEmpty {
                // Both halves' reads at once: a slow Redis costs one read deadline, not two.
                return OffLoop.run(on: pool.loop, {
                    await withTaskGroup(of: (scope: String, worker: String?).self) { group in
                        for scope in unknown { group.addTask { (scope, await sessions.lookup(model: scope, routingKey: routingKey)) } }
                        var found: [(scope: String, worker: String)] = []
                        for await answer in group { if let w = answer.worker { found.append((answer.scope, w)) } }
                        return found
                    }
                }) { [self] found in
                    guard case .selecting = self.machine.state else { return }
                    for (scope, worker) in found {
                        self.state.registry.adoptAssignment(model: scope, routingKey: routingKey, worker: worker, now: self.state.nowMs())
                        self.adoptedFromRedis.insert(scope)
                    }
                    self.selectWorker(avoiding: avoiding, avoidingPrefill: avoidingPrefill)
                }
            }
        }
        plan.routing.now = state.nowMs()
        if case .prefillDecode = plan.kind { return selectPair(avoiding: avoiding, avoidingPrefill: avoidingPrefill) }
        if state.config.pd != nil {
            // Info routes in PD mode: the first prefill worker that can answer (as the reference).
            let prefills = state.registry.all.filter { $0.role == .prefill && $0.isAvailable }
            guard let w = prefills.first(where: { !avoiding.contains($0.id) }) ?? prefills.first else {
                return perform(machine.noWorker(.noneAvailable))
            }
            choice = nil
            return perform(machine.workerChosen(w, now: plan.routing.now))
        }
        let selecting = plan.trace.map { _ in DefaultTracerClock.now }
        switch state.registry.select(model: plan.model, request: plan.routing, avoiding: avoiding, using: &rng) {
        case .unknownModel: perform(machine.noWorker(.unknownModel))
        case .noneAvailable: perform(machine.noWorker(.noneAvailable))
        case .overloaded: shed(missing: .primary)
        case .worker(let choice):
            self.choice = choice
            traceChoice(choice, startedAt: selecting)
            perform(machine.workerChosen(choice.worker, now: plan.routing.now))
        }
    }

    /// PD: a prefill worker by the prefill policy, then a decode worker by the decode policy.
    func selectPair(avoiding: Set<String>, avoidingPrefill: Set<String>) {
        let selecting = plan.trace.map { _ in DefaultTracerClock.now }
        switch state.registry.select(model: plan.model, request: plan.routing, avoiding: avoidingPrefill, role: .prefill, using: &rng) {
        case .unknownModel:
            perform(machine.noWorker(.unknownModel))
        case .noneAvailable:
            perform(machine.noWorker(.noneAvailable, missing: .prefill))
        case .overloaded:
            shed(missing: .prefill)
        case .worker(let prefillPick):
            switch state.registry.select(model: plan.model, request: plan.routing, avoiding: avoiding, role: .decode, using: &rng) {
            case .unknownModel: perform(machine.noWorker(.unknownModel))
            case .noneAvailable:
                perform(machine.noWorker(.noneAvailable, missing: .primary))
            case .overloaded:
                shed(missing: .primary)
            case .worker(let decodePick):
                prefillChoice = prefillPick
                choice = decodePick
                traceChoice(prefillPick, startedAt: selecting)
                traceChoice(decodePick, startedAt: selecting)
                if machine.retries == 0 { recordDecision(prefillPick) }
                perform(machine.workerChosen(decodePick.worker, prefill: prefillPick.worker, now: plan.routing.now))
            }
        }
    }

    /// Every usable worker (of a half) is overloaded and `--worker-overload-shed` refuses the request.
    private func shed(missing: Machine.Half) {
        state.metrics.workerOverload(shed: true)
        perform(machine.noWorker(.overloaded, missing: missing))
    }

    /// The first routing decision of an inference request: metrics, and the sticky assignments
    /// the mesh and Redis share, each under the key of the policy that made it (so a PD pair's
    /// prefill and decode halves are kept apart) and naming the candidate it chose (with
    /// `--dp-aware`, the rank too).
    func recordDecision(_ choice: WorkerRegistry.Choice) {
        let (w, reason) = (choice.worker, choice.reason)
        let labels = routeLabels
        routedLabels = labels
        switch choice.fallback {
        case .overload: state.metrics.workerOverload(shed: false)
        case .liveness: state.metrics.livenessFallback()
        case nil: break
        }
        state.metrics.routed(labels, streaming: plan.stream, workerType: w.workerType, policy: choice.policy.rawValue, reason: reason.rawValue,
                             matchRatio: choice.matchRatio, bodyReason: state.policyUsesText ? "policy_needs_text" : "routing_fields")
        if choice.policy == .cache_aware { state.rates.decided(cacheHit: reason == .cacheHit) }
        state.treeSync?.noteDecision()
        guard reason == .newAssignment || reason == .reassigned || reason == .sticky, let key = plan.routing.routingKey else { return }
        if state.mesh != nil, reason != .sticky || adoptedFromRedis.contains(choice.policyKey) {
            MeshBridge.assigned(routingKey: key, policyKey: choice.policyKey, candidate: choice.candidate, state: state)
        }
        if let sessions = state.sessions, !key.isEmpty {
            sessions.used(model: choice.policyKey, routingKey: ManualPolicy.normalize(key), worker: choice.candidate,
                          changed: reason != .sticky, now: plan.routing.now)
        }
    }
}
