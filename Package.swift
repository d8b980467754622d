// swift-tools-version: 6.0
// vlmdata: LLaVA-style vision-language training data, built and streamed.
// Module layout (each may import only those above it): see ../shared/DESIGN.md.
import PackageDescription

let grdb: Target.Dependency = .product(name: "GRDB", package: "GRDB.swift")
// SQLite's C API, for VLMCatalog's per-row binding (BoundStatement.swift).
let sqliteC: Target.Dependency = .product(name: "GRDBSQLite", package: "GRDB.swift")
let crypto: Target.Dependency = .product(name: "Crypto", package: "swift-crypto")
let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")
let yams: Target.Dependency = .product(name: "Yams", package: "Yams")

let package = Package(
    name: "vlmdata",
    products: [
        .executable(name: "vlmdata", targets: ["vlmdata"]),
        // Benchmarks' fixtures and in-process benchmarks, kept out of the shipped CLI (`make bench`).
        .executable(name: "vlmdata-bench", targets: ["vlmdata-bench"]),
        .library(name: "VLMData", targets: [
            "VLMCore", "VLMIO", "VLMCatalog", "VLMImage", "VLMText", "VLMInstruct",
            "VLMShard", "VLMLoader", "VLMTrain", "VLMPipeline", "VLMEval",
        ]),
        // libVLMDataC.so: the loader behind a C ABI (include/vlmdata.h), what python/vlmdata loads with ctypes.
        .library(name: "VLMDataC", type: .dynamic, targets: ["VLMDataC"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // System libraries: one target per C library, module.modulemap + shim.h only.
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg", providers: [.apt(["libturbojpeg0-dev", "libjpeg62-turbo-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CXXHash", pkgConfig: "libxxhash", providers: [.apt(["libxxhash-dev"])]),
        .systemLibrary(name: "CDeflate", pkgConfig: "libdeflate", providers: [.apt(["libdeflate-dev"])]),

        .target(name: "VLMCore"),
        .target(name: "VLMIO", dependencies: ["VLMCore", "CArchive", "CCurl", "CTurboJPEG", "CPNG", "CXXHash", "CDeflate", crypto]),
        .target(name: "VLMCatalog", dependencies: ["VLMCore", "VLMIO", grdb, sqliteC]),
        // The resampler's AVX2 kernel: C, because Swift cannot give one function its own target features.
        .target(name: "CVLMKernels"),
        .target(name: "VLMImage", dependencies: ["VLMCore", "VLMIO", "CVLMKernels"]),
        .target(name: "VLMText", dependencies: ["VLMCore", "VLMIO"]),
        .target(name: "VLMInstruct", dependencies: ["VLMCore", "VLMIO", "VLMCatalog"]),
        .target(name: "VLMShard", dependencies: ["VLMCore", "VLMIO", "VLMCatalog"]),
        .target(name: "VLMLoader", dependencies: ["VLMCore", "VLMIO", "VLMCatalog", "VLMImage", "VLMShard"]),
        .target(name: "VLMTrain", dependencies: ["VLMCore", "COpenBLAS", "VLMLoader"]),
        .target(name: "VLMEval", dependencies: ["VLMCore", "VLMIO", "VLMCatalog", "VLMInstruct"]),
        .target(name: "VLMPipeline", dependencies: [
            "VLMCore", "VLMIO", "VLMCatalog", "VLMImage", "VLMText", "VLMInstruct",
            "VLMShard", "VLMLoader", "VLMTrain", "VLMEval", yams,
        ]),
        .target(name: "VLMDataC", dependencies: ["VLMCore", "VLMCatalog", "VLMImage", "VLMLoader"]),
        .executableTarget(name: "vlmdata", dependencies: [
            "VLMCore", "VLMIO", "VLMCatalog", "VLMImage", "VLMText", "VLMInstruct", "VLMShard", "VLMLoader", "VLMTrain",
            "VLMPipeline", "VLMEval", argumentParser,
        ]),
        .target(name: "VLMFixtures", dependencies: ["VLMCore", "VLMIO", "VLMCatalog", "VLMShard"]),
        .executableTarget(name: "vlmdata-bench", dependencies: ["VLMCore", "VLMCatalog", "VLMImage", "VLMLoader", "VLMText", "VLMFixtures", argumentParser]),

        .testTarget(name: "VLMCoreTests", dependencies: ["VLMCore"]),
        .testTarget(name: "VLMIOTests", dependencies: ["VLMCore", "VLMIO"]),
        .testTarget(name: "VLMCatalogTests", dependencies: ["VLMCatalog", grdb]),
        .testTarget(name: "VLMImageTests", dependencies: ["VLMCore", "VLMImage", "VLMIO"]),
        .testTarget(name: "VLMTextTests", dependencies: ["VLMCore", "VLMText"]),
        .testTarget(name: "VLMInstructTests", dependencies: ["VLMCore", "VLMInstruct", "VLMCatalog", "VLMIO", grdb]),
        .testTarget(name: "VLMShardTests", dependencies: ["VLMCore", "VLMShard", "VLMCatalog", "VLMIO", "VLMFixtures", grdb]),
        .testTarget(name: "VLMLoaderTests", dependencies: ["VLMCore", "VLMLoader", "VLMShard", "VLMCatalog", "VLMIO", "VLMImage", grdb]),
        .testTarget(name: "VLMTrainTests", dependencies: ["VLMCore", "VLMLoader", "VLMTrain"]),
        .testTarget(name: "VLMPipelineTests", dependencies: [
            "VLMCore", "VLMIO", "VLMCatalog", "VLMImage", "VLMInstruct", "VLMShard", "VLMLoader", "VLMPipeline", grdb,
        ]),
        .testTarget(name: "VLMEvalTests", dependencies: ["VLMCore", "VLMEval", "VLMInstruct", "VLMPipeline", "VLMCatalog", "VLMIO"]),
        .testTarget(name: "CLITests"),
    ]
)
