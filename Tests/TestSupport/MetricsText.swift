/// The value of one sample line (`name{labels} value`) in a Prometheus text exposition, 0 when
/// the line is absent (a counter not yet incremented is not rendered).
public func metricSample(_ sample: String, in text: String) -> Double {
    for line in text.split(separator: "\n") where line.hasPrefix(sample + " ") {
        return Double(line.split(separator: " ").last!) ?? 0
    }
    return 0
}
