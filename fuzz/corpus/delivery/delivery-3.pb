÷
 
$01890a60-aaaa-7bbb-8ccc-ddddeeeefff0$3f2504e0-4f89-41d3-9a0c-0305e82c33011spiffe://fuzz.meldnet.test/representative/NL/fier €à¥12€Øİ„1€à¥1 (08@êÇ1tT³|šÖÒ[œzË| Vò{¿sgyÓR…ÒE›4uyŠ:bË<ø¶`ŸCÂÕaÿçXÛ¼ëDì÷.10ba682c8ad13513