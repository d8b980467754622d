import Testing
@testable import VLMImage
