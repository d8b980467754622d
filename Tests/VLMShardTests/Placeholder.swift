import Testing
@testable import VLMShard
