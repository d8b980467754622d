import Foundation
import VLMCore
import VLMLoader

// The C ABI (include/vlmdata.h). Every function that can fail returns 0 or an error code and writes a message
// naming the file, record and what is wrong into the caller's `err` buffer. Handles are opaque pointers; one
// thread uses a handle at a time.

enum Code {
    static let ok: Int32 = 0
    static let bufferTooSmall: Int32 = -1

    static func of(_ error: any Error) -> Int32 {
        guard let error = error as? VLMError else { return 10 }
        switch error.kind {
        case .badInput: return 1
        case .notFound: return 2
        case .io: return 3
        case .unsupported: return 4
        case .conflict: return 5
        case .invalidArgument: return 6
        case .network: return 7
        case .corrupt: return 8
        case .gateFailed: return 9
        }
    }
}

/// Copies `text` (truncated, NUL-terminated) into a caller's buffer.
func write(_ text: String, to buffer: UnsafeMutablePointer<CChar>?, capacity: Int) {
    guard let buffer, capacity > 0 else { return }
    let bytes = Array(text.utf8.prefix(capacity - 1)).map { CChar(bitPattern: $0) }
    put(bytes, buffer, at: 0)
    buffer[bytes.count] = 0
}

/// Runs `body`, turning a thrown error into its code and message.
func guarded(_ err: UnsafeMutablePointer<CChar>?, _ errCapacity: Int, _ body: () throws -> Int32) -> Int32 {
    do {
        return try body()
    } catch {
        write(String(describing: error), to: err, capacity: errCapacity)
        return Code.of(error)
    }
}

/// Copies `values` to `destination + offset` (nothing when either is empty).
func put<T>(_ values: [T], _ destination: UnsafeMutablePointer<T>?, at offset: Int) {
    guard let destination, !values.isEmpty else { return }
    values.withUnsafeBufferPointer { destination.advanced(by: offset).update(from: $0.baseAddress!, count: $0.count) }
}

func string(_ pointer: UnsafePointer<CChar>?, _ what: String) throws -> String {
    guard let pointer else { throw VLMError(.invalidArgument, record: what, "is a null pointer") }
    return String(cString: pointer)
}

func resumeState(_ json: UnsafePointer<CChar>?) throws -> LoaderState? {
    guard let json else { return nil }
    let text = String(cString: json)
    if text.isEmpty { return nil }
    do { return try JSONDecoder().decode(LoaderState.self, from: Data(text.utf8)) } catch {
        throw VLMError(.badInput, record: "resume state", "not a loader state: \(error)")
    }
}

func encode(_ state: LoaderState) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return String(decoding: (try? encoder.encode(state)) ?? Data(), as: UTF8.self)
}

func loaderHandle(_ pointer: UnsafeMutableRawPointer?) throws -> LoaderHandle {
    guard let pointer else { throw VLMError(.invalidArgument, record: "loader", "is a null pointer") }
    return Unmanaged<LoaderHandle>.fromOpaque(pointer).takeUnretainedValue()
}

func streamHandle(_ pointer: UnsafeMutableRawPointer?) throws -> StreamHandle {
    guard let pointer else { throw VLMError(.invalidArgument, record: "stream", "is a null pointer") }
    return Unmanaged<StreamHandle>.fromOpaque(pointer).takeUnretainedValue()
}

/// The ABI version of this library (include/vlmdata.h's `VLMDATA_ABI_VERSION`).
@_cdecl("vlmdata_abi_version")
public func vlmdata_abi_version() -> Int32 { 2 }

/// `out[0]` rank, `out[1]` world size, `out[2]` local rank: the given `rank`/`worldSize` (-1: not given) over the
/// launcher's environment, as `LoaderConfig` resolves them.
@_cdecl("vlmdata_topology")
public func vlmdata_topology(_ rank: Int64, _ worldSize: Int64, _ out: UnsafeMutablePointer<Int64>?,
                             _ err: UnsafeMutablePointer<CChar>?, _ errCapacity: Int) -> Int32 {
    guarded(err, errCapacity) {
        guard let out else { throw VLMError(.invalidArgument, record: "out", "is a null pointer") }
        let topology = try Topology.resolve(rank: rank < 0 ? nil : Int(rank), worldSize: worldSize < 0 ? nil : Int(worldSize),
                                            environment: ProcessInfo.processInfo.environment)
        put([Int64(topology.rank), Int64(topology.worldSize), Int64(topology.localRank)], out, at: 0)
        return Code.ok
    }
}

@_cdecl("vlmdata_loader_open")
public func vlmdata_loader_open(_ config: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                _ err: UnsafeMutablePointer<CChar>?, _ errCapacity: Int) -> Int32 {
    guarded(err, errCapacity) {
        guard let out else { throw VLMError(.invalidArgument, record: "out", "is a null pointer") }
        let loader = try LoaderConfig.parse(try string(config, "config")).loader()
        out.pointee = Unmanaged.passRetained(LoaderHandle(loader: loader)).toOpaque()
        return Code.ok
    }
}

@_cdecl("vlmdata_loader_free")
public func vlmdata_loader_free(_ loader: UnsafeMutableRawPointer?) {
    guard let loader else { return }
    Unmanaged<LoaderHandle>.fromOpaque(loader).release()
}

/// `out[0]` global samples of the epoch, `out[1]` samples this rank takes in it (from the start or the resume
/// state), `out[2]` the epoch the stream would run, `out[3]` global positions already consumed in it,
/// `out[4]` world size, `out[5]` rank.
@_cdecl("vlmdata_loader_plan")
public func vlmdata_loader_plan(_ loader: UnsafeMutableRawPointer?, _ epoch: Int64, _ resume: UnsafePointer<CChar>?,
                                _ out: UnsafeMutablePointer<Int64>?, _ err: UnsafeMutablePointer<CChar>?,
                                _ errCapacity: Int) -> Int32 {
    guarded(err, errCapacity) {
        let handle = try loaderHandle(loader)
        guard let out else { throw VLMError(.invalidArgument, record: "out", "is a null pointer") }
        let stream = try handle.stream(epoch: Int(epoch), resume: try resumeState(resume), share: WorkerShare(),
                                       threads: 0, prefetch: 1)
        let values = [stream.plan.count, stream.slice.count, stream.plan.epoch, stream.slice.consumed,
                      stream.slice.topology.worldSize, stream.slice.topology.rank]
        for (i, v) in values.enumerated() { out[i] = Int64(v) }
        return Code.ok
    }
}

/// The resume state (JSON) once this rank has consumed `rankTaken` samples of the stream that (epoch, resume)
/// start. Returns `Code.bufferTooSmall` with `*needed` set when `buffer` cannot hold it.
@_cdecl("vlmdata_loader_state")
public func vlmdata_loader_state(_ loader: UnsafeMutableRawPointer?, _ epoch: Int64, _ resume: UnsafePointer<CChar>?,
                                 _ rankTaken: Int64, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int,
                                 _ needed: UnsafeMutablePointer<Int>?, _ err: UnsafeMutablePointer<CChar>?,
                                 _ errCapacity: Int) -> Int32 {
    guarded(err, errCapacity) {
        let handle = try loaderHandle(loader)
        let stream = try handle.stream(epoch: Int(epoch), resume: try resumeState(resume), share: WorkerShare(),
                                       threads: 0, prefetch: 1)
        let json = encode(stream.state(rankTaken: Int(rankTaken)))
        needed?.pointee = json.utf8.count + 1
        guard json.utf8.count < capacity else {
            write("the state needs \(json.utf8.count + 1) bytes, the buffer holds \(capacity)", to: err, capacity: errCapacity)
            return Code.bufferTooSmall
        }
        write(json, to: buffer, capacity: capacity)
        return Code.ok
    }
}

/// Opens one worker's share of this rank's stream. `options`: epoch, worker, workers, chunk, threads, prefetch,
/// pack_context (0: no packing), pack_rows.
@_cdecl("vlmdata_stream_open")
public func vlmdata_stream_open(_ loader: UnsafeMutableRawPointer?, _ options: UnsafePointer<Int64>?,
                                _ resume: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                _ err: UnsafeMutablePointer<CChar>?, _ errCapacity: Int) -> Int32 {
    guarded(err, errCapacity) {
        let handle = try loaderHandle(loader)
        guard let options, let out else { throw VLMError(.invalidArgument, record: "options", "is a null pointer") }
        let o = (0..<8).map { Int(options[$0]) }
        guard o[6] >= 0, o[7] >= 1 else {
            throw VLMError(.invalidArgument, record: "stream options", "pack_context must be 0 or more and pack_rows at least 1")
        }
        let stream = try handle.stream(epoch: o[0], resume: try resumeState(resume),
                                       share: WorkerShare(worker: o[1], workers: o[2], chunk: o[3]), threads: o[4],
                                       prefetch: o[5])
        out.pointee = Unmanaged.passRetained(StreamHandle(stream: stream, packContext: o[6], packRows: o[7])).toOpaque()
        return Code.ok
    }
}

@_cdecl("vlmdata_stream_free")
public func vlmdata_stream_free(_ stream: UnsafeMutableRawPointer?) {
    guard let stream else { return }
    let handle = Unmanaged<StreamHandle>.fromOpaque(stream)
    handle.takeUnretainedValue().stream.close()
    handle.release()
}

/// Reads the next batch: up to `maxSamples` samples, or with packing one packed row. `info`: samples (0 at the
/// end), tokens, pixel bytes, key bytes, meta bytes, rank samples consumed once it is delivered, samples skipped
/// so far (missing shards), overlong samples the packer dropped so far.
@_cdecl("vlmdata_stream_next")
public func vlmdata_stream_next(_ stream: UnsafeMutableRawPointer?, _ maxSamples: Int64,
                                _ info: UnsafeMutablePointer<Int64>?, _ err: UnsafeMutablePointer<CChar>?,
                                _ errCapacity: Int) -> Int32 {
    guarded(err, errCapacity) {
        let handle = try streamHandle(stream)
        guard let info else { throw VLMError(.invalidArgument, record: "info", "is a null pointer") }
        guard maxSamples >= 1 else { throw VLMError(.invalidArgument, record: "max_samples", "must be at least 1") }
        try handle.next(maxSamples: Int(maxSamples))
        let p = handle.pending
        let values = [p.count, p.reduce(0) { $0 + $1.tokens }, p.reduce(0) { $0 + $1.pixelBytes },
                      p.reduce(0) { $0 + $1.key.utf8.count + 1 }, p.reduce(0) { $0 + $1.metaBytes },
                      handle.pendingTaken, handle.stream.report.skipped, handle.overlong]
        for (i, v) in values.enumerated() { info[i] = Int64(v) }
        return Code.ok
    }
}

/// Copies the batch `vlmdata_stream_next` read into the caller's buffers (`buffers`: 13 pointers, see the header;
/// a null pointer skips that field).
@_cdecl("vlmdata_stream_copy")
public func vlmdata_stream_copy(_ stream: UnsafeMutableRawPointer?, _ buffers: UnsafePointer<UnsafeMutableRawPointer?>?,
                                _ err: UnsafeMutablePointer<CChar>?, _ errCapacity: Int) -> Int32 {
    guarded(err, errCapacity) {
        let handle = try streamHandle(stream)
        guard let buffers else { throw VLMError(.invalidArgument, record: "buffers", "is a null pointer") }
        func typed<T>(_ i: Int, _ type: T.Type) -> UnsafeMutablePointer<T>? { buffers[i]?.assumingMemoryBound(to: T.self) }
        let inputIds = typed(0, Int32.self), labels = typed(1, Int32.self), tokenOffsets = typed(2, Int64.self)
        let pixels = typed(3, UInt8.self), pixelOffsets = typed(4, Int64.self), pixelShapes = typed(5, Int64.self)
        let imageTokens = typed(6, Int64.self), indices = typed(7, Int64.self), isPad = typed(8, UInt8.self)
        let datasets = typed(9, Int64.self), keys = typed(10, UInt8.self), meta = typed(11, UInt8.self)
        let metaOffsets = typed(12, Int64.self)
        var token = 0, pixel = 0, keyByte = 0, metaByte = 0
        tokenOffsets?[0] = 0
        pixelOffsets?[0] = 0
        metaOffsets?[0] = 0
        func copy<T>(_ values: UnsafeBufferPointer<T>, _ destination: UnsafeMutablePointer<T>?, at offset: Int) {
            guard let destination, let source = values.baseAddress, !values.isEmpty else { return }
            (destination + offset).update(from: source, count: values.count)
        }
        for (n, item) in handle.pending.enumerated() {
            try item.withFields { s in
                copy(s.inputIds, inputIds, at: token)
                copy(s.labels, labels, at: token)
                token += s.inputIds.count
                tokenOffsets?[n + 1] = Int64(token)
                copy(s.pixels, pixels, at: pixel)
                pixel += s.pixels.count
                pixelOffsets?[n + 1] = Int64(pixel)
                guard s.pixels.isEmpty || s.pixelShape.count == 3 else {
                    throw VLMError(.corrupt, record: s.key, "pixels have shape \(s.pixelShape), expected [tiles, patches, dim]")
                }
                for d in 0..<3 { pixelShapes?[3 * n + d] = s.pixels.isEmpty ? 0 : Int64(s.pixelShape[d]) }
                imageTokens?[n] = Int64(s.imageTokens)
                indices?[n] = Int64(s.index)
                isPad?[n] = s.isPad ? 1 : 0
                datasets?[n] = Int64(s.dataset)
                let keyBytes = Array(s.key.utf8) + [0]
                put(keyBytes, keys, at: keyByte)
                keyByte += keyBytes.count
                copy(s.meta, meta, at: metaByte)
                metaByte += s.meta.count
                metaOffsets?[n + 1] = Int64(metaByte)
            }
        }
        return Code.ok
    }
}
