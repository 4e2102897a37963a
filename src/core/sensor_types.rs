//! The built-in sensor type registry: keys devices report and their units.

pub struct SensorTypeDef {
    pub key: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
}

const fn t(key: &'static str, unit: &'static str, description: &'static str) -> SensorTypeDef {
    SensorTypeDef {
        key,
        unit,
        description,
    }
}

pub const BUILT_IN: &[SensorTypeDef] = &[
    t("temperature", "C", "Air temperature in degrees Celsius"),
    t("humidity", "%", "Relative humidity"),
    t("pressure", "hPa", "Barometric pressure"),
    t("co2", "ppm", "Carbon dioxide concentration"),
    t("tvoc", "ppb", "Total volatile organic compounds"),
    t("pm1", "ug/m3", "Particulate matter up to 1 um"),
    t("pm2_5", "ug/m3", "Particulate matter up to 2.5 um"),
    t("pm10", "ug/m3", "Particulate matter up to 10 um"),
    t("light", "lux", "Illuminance"),
    t("noise", "dBA", "A-weighted sound level"),
    t("voltage", "V", "Supply voltage"),
    t("current", "A", "Supply current"),
    t("power", "W", "Power draw"),
    t("battery", "%", "Battery charge"),
    t("soil_moisture", "%", "Volumetric soil moisture"),
    t("wind_speed", "m/s", "Wind speed"),
    t("rainfall", "mm", "Rainfall since the last reading"),
    t("cpu_temp", "C", "Processor temperature"),
    t("gpu_temp", "C", "GPU temperature"),
    t("cpu_usage", "%", "Processor load"),
    t("memory_usage", "%", "Memory in use"),
    t("disk_usage", "%", "Disk space in use"),
    t("inference_fps", "fps", "Model inference frames per second"),
    t("inference_latency", "ms", "Model inference latency"),
    t("people_count", "count", "People detected in view"),
    t("vehicle_count", "count", "Vehicles detected in view"),
];
