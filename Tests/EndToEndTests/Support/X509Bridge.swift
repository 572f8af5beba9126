import SwiftASN1
import X509

/// Reads what tests compare from a DER certificate (swift-certificates).
enum X509Bridge {
    static func serial(der: [UInt8]) throws -> String {
        "\(try Certificate(derEncoded: der).serialNumber)"
    }
}
