import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMImage
import VLMLoader

struct BenchLoaderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loader",
        abstract: "Time an epoch of the loader (read + decode every sample) against a raw sequential read of the shards.",
        discussion: """
        Prints samples/s and MB/s of one epoch through the loader with --workers threads, the raw sequential read \
        rate of the same shard files, their ratio, and the shuffle quality of the order (mean displacement as a \
        share of the dataset, 0.33 for a uniform shuffle; adjacency: share of neighbours that were neighbours in \
        the source order, ~0 for a uniform shuffle, 1 for none). Read the raw pass first or drop the page cache \
        yourself if you compare cold reads.
        """)

    @Option(help: ArgumentHelp("Workspace folder holding the shards (catalog.sqlite + shards/).", valueName: "dir"))
    var workspace = "./vlmdata-work"

    @Option(help: ArgumentHelp("Background decode threads (0: decode on the main thread).", valueName: "k"))
    var workers = 2

    @Option(help: ArgumentHelp("Samples each worker decodes ahead.", valueName: "n"))
    var prefetch = 32

    @Option(help: ArgumentHelp("Shuffle seed.", valueName: "s"))
    var seed: UInt64 = 0

    @Option(help: ArgumentHelp("Epochs to time (the median is printed).", valueName: "n"))
    var repeats = 3

    @Option(help: ArgumentHelp("Also collate into batches of this many rows (float32 CLIP pixels).", valueName: "b"))
    var batchSize: Int?

    @Option(help: ArgumentHelp("Samples a worker reads into one buffer and hands over whole (default 16).", valueName: "n"))
    var chunk: Int?

    @Flag(help: "Take samples one by one, each copied out (`next()`), instead of whole batches in place (`nextBatch()`).")
    var perSample = false

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        if repeats < 1 { throw ValidationError("--repeats must be at least 1.") }
        if workers < 0 { throw ValidationError("--workers cannot be negative.") }
        if prefetch < 1 { throw ValidationError("--prefetch must be at least 1.") }
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1.") }
        if let chunk, chunk < 1 { throw ValidationError("--chunk must be at least 1.") }
    }

    func run() throws {
        var results: [String: Any] = [:]
        try runOrExit {
            guard FileManager.default.fileExists(atPath: workspace + "/catalog.sqlite") else {
                throw VLMError(.notFound, file: workspace + "/catalog.sqlite", "no catalog here; run `vlmdata-bench synthetic` and `vlmdata shard` first")
            }
            let catalog = try Catalog(workspace: Workspace(root: workspace))
            let loader = try Loader(
                datasets: [LoaderDataset(index: try DatasetIndex.load(catalog: catalog), source: LocalShardSource(root: catalog.workspace.root))],
                options: LoaderOptions(order: OrderSpec(seed: seed), workers: workers, prefetch: prefetch, unit: batchSize ?? 1,
                                       chunk: chunk))
            let dataset = loader.datasets[0]
            let index = dataset.index

            // Raw sequential read of every shard file, 4 MiB at a time.
            var rawTimes: [Double] = []
            var rawBytes = 0
            for _ in 0..<repeats {
                rawBytes = 0
                let start = DispatchTime.now()
                var buffer = [UInt8](repeating: 0, count: 4 << 20)
                for shard in index.shards {
                    let path = catalog.workspace.resolve(shard.path)
                    let fd = open(path, O_RDONLY | O_CLOEXEC)
                    guard fd >= 0 else { throw VLMError(.notFound, file: path, "cannot open shard") }
                    while true {
                        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                        if n <= 0 { break }
                        rawBytes += n
                    }
                    close(fd)
                }
                rawTimes.append(Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9)
            }

            // An epoch through the loader.
            var times: [Double] = []
            var samples = 0
            var bytes = 0
            var checksum = 0
            for _ in 0..<repeats {
                samples = 0
                bytes = 0
                let start = DispatchTime.now()
                if let batchSize {
                    let batches = try loader.batches(epoch: 0, resuming: nil, options: BatchOptions(
                        batchSize: batchSize, collate: CollateOptions(pixelFormat: .float32(Normalization.clip))))
                    while let batch = try batches.next() {
                        samples += batch.keys.count
                        bytes += batch.inputIds.count * 4 + batch.pixelsFloat.count * 4
                        checksum &+= Int(batch.inputIds.first ?? 0)
                    }
                } else if perSample {
                    let stream = try loader.samples(epoch: 0)
                    while let sample = try stream.next() {
                        samples += 1
                        bytes += sample.byteCount
                        checksum &+= Int(sample.inputIds.first ?? 0) &+ Int(sample.pixels.last ?? 0)
                    }
                } else {
                    // whole batches, read in place: what a trainer takes
                    let stream = try loader.samples(epoch: 0)
                    while let batch = try stream.nextBatch() {
                        for i in 0..<batch.count {
                            let ids = batch.inputIds(i), labels = batch.labels(i), pixels = batch.pixels(i)
                            samples += 1
                            bytes += ids.count * 4 + labels.count * 4 + pixels.count + batch.meta(i).count
                            checksum &+= Int(ids.first ?? 0) &+ Int(pixels.last ?? 0)
                        }
                    }
                }
                times.append(Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9)
            }
            let indexBytes = index.samples.reduce(0) { $0 + $1.size }
            let median = times.sorted()[times.count / 2]
            let rawMedian = rawTimes.sorted()[rawTimes.count / 2]

            // Shuffle quality of epoch 0's order.
            let order = loader.plan(epoch: 0).refs.map { Int($0.sample) }
            let n = max(1, order.count)
            let displacement = order.enumerated().reduce(0.0) { $0 + Double(abs($1.offset - $1.element)) } / Double(n) / Double(n)
            var adjacent = 0
            for i in 1..<max(1, order.count) where abs(order[i] - order[i - 1]) == 1 { adjacent += 1 }

            results = [
                "samples": samples, "workers": workers, "per_sample": perSample, "epoch_seconds": median,
                "samples_per_s": Double(samples) / median,
                "mb_per_s": Double(indexBytes) / median / 1e6,
                "decoded_mb_per_s": Double(bytes) / median / 1e6,
                "raw_seconds": rawMedian, "raw_mb_per_s": Double(rawBytes) / rawMedian / 1e6,
                "raw_samples_per_s": Double(index.samples.count) / rawMedian,
                "ratio_vs_raw": (Double(indexBytes) / median) / (Double(rawBytes) / rawMedian),
                "shuffle_mean_displacement": displacement,
                "shuffle_adjacency": Double(adjacent) / Double(max(1, order.count - 1)),
                "checksum": checksum,
            ]
        }
        if json {
            let data = try JSONSerialization.data(withJSONObject: results, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for key in results.keys.sorted() { print("\(key)=\(results[key]!)") }
        }
    }
}
