
Œ
$01890a5d-ac96-7bb1-9c4e-6f2a3b4c5d6eNL€à¥1""https://files.example.test/a/b?x=1*
DE2®
@4bf5122f344554c53bde2ebb8cd2b7e3d1600ad631c385a5d7cce23c7785459a 01010101010101010101010101010101@5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b Z(08@—Ššè%¿ÏsJŸD”§‘L>IU³s cV¿4ÎLá¯@‘·1Qéª€­d#=ÌèÆ“NJAÒ‚o5è„1325b850c2871916