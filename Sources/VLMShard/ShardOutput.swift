import Foundation
import VLMIO

/// The shard writer's output: VLMIO's `HashingFileWriter`, which hashes the shard as it is assembled and writes it
/// with direct I/O.
///
/// ```swift
/// let out = try ShardOutput(path: tmp)
/// let tar = TarWriter(output: out)
/// try tar.add(name: "k.pixels.npy", bytes: record)   // a pixel npy, from a mapping of its pixel shard
/// try tar.finish()
/// let (sha256, bytes) = try out.finish()
/// ```
public typealias ShardOutput = HashingFileWriter

extension HashingFileWriter: TarOutput {}
